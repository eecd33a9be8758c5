"""Retrieval over the bundled question set: is each question's document (and its answer) in the top k?

Run: `python benchmarks/qa_retrieval.py [--k 1 3 5] [--mode MODE] [--json]`. Ingests examples/docs
into a temporary store with the default embedder (the MLX MiniLM encoder when installed) and the
demo's chunker settings, searches each question's text, and prints, for each k:

- doc@k: the share of questions whose ``doc`` owns one of the top k chunks;
- answer@k: the share whose gold answer (or an alias) is written in one of the top k chunks,
  which is what a model reading those passages needs;
- titled@k: the same with each chunk preceded by its document's title (a chunk often says "he"
  where its title names the person).

Then the questions whose document or answer is not in the first hit. ``--mode`` is passed to ``store.search``
only when given (for stores with more than one search mode).
"""
from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lacy_mlx.chunker import ChunkerConfig
from lacy_mlx.ingest import iter_documents
from lacy_mlx.qa import Question, answer_matches, document_name, load_questions
from lacy_mlx.store import Store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _first(q: Question, passages: list[str]) -> int | None:
    """1-based rank of the first passage holding the question's answer, None if none does."""
    return next((i + 1 for i, p in enumerate(passages) if answer_matches(p, q.answer, q.aliases)), None)


def measure(docs: Path, questions_path: Path, *, ks: list[int], mode: str | None = None,
            max_tokens: int = 60, overlap: int = 10) -> dict:
    """Recall of each question's document and answer in the top ``ks`` chunks; ranks of misses."""
    questions = [q for q in load_questions(questions_path) if q.doc is not None]
    extra = {} if mode is None else {"mode": mode}
    kmax = max(ks)
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "qa.db") as store:
        t0 = time.perf_counter()
        added = store.add_documents(iter_documents([docs]), chunker=ChunkerConfig(max_tokens=max_tokens, overlap=overlap))
        ingest_s = time.perf_counter() - t0
        rows, search_ms = [], []
        for q in questions:
            t0 = time.perf_counter()
            hits = store.search(q.question, k=kmax, **extra)
            search_ms.append((time.perf_counter() - t0) * 1e3)
            names = [document_name(h.external_id) for h in hits]
            doc_rank = names.index(q.doc) + 1 if q.doc in names else None
            rows.append({"id": q.id, "question": q.question, "doc": q.doc, "doc_rank": doc_rank,
                         "answer_rank": _first(q, [h.text for h in hits]),
                         "titled_rank": _first(q, [f"{h.title or ''}\n{h.text}" for h in hits]),
                         "top": names[0] if names else None})
        embedder = store.embedder_name
    n = len(rows)

    def recall(key: str, k: int) -> float:
        return sum(r[key] is not None and r[key] <= k for r in rows) / n

    return {"questions": n, "documents": added.added, "chunks": added.chunks, "embedder": embedder,
            "mode": mode, "chunker": {"max_tokens": max_tokens, "overlap": overlap},
            "doc_recall": {k: recall("doc_rank", k) for k in ks},
            "answer_recall": {k: recall("answer_rank", k) for k in ks},
            "titled_recall": {k: recall("titled_rank", k) for k in ks},
            "ingest_s": ingest_s, "search_ms_median": statistics.median(search_ms), "rows": rows}


def print_table(result: dict) -> None:
    print(f"{result['questions']} questions over {result['documents']} documents ({result['chunks']} chunks, "
          f"max_tokens {result['chunker']['max_tokens']}, overlap {result['chunker']['overlap']}); "
          f"embedder {result['embedder']}; mode {result['mode'] or 'default'}")
    print(f"ingest {result['ingest_s']:.2f}s, search median {result['search_ms_median']:.1f} ms/question\n")
    print(f"{'k':>3} {'doc@k':>7} {'answer@k':>9} {'titled@k':>9}")
    for k in result["doc_recall"]:
        print(f"{k:>3} {result['doc_recall'][k]:>7.3f} {result['answer_recall'][k]:>9.3f} "
              f"{result['titled_recall'][k]:>9.3f}")
    misses = [r for r in result["rows"] if r["doc_rank"] != 1 or r["answer_rank"] != 1]
    if misses:
        print(f"\ndocument or answer not in the first hit ({len(misses)}): id, doc rank, answer rank, "
              "top document, question")
        for r in misses:
            print(f"  {r['id']} {str(r['doc_rank'] or '-'):>2} {str(r['answer_rank'] or '-'):>2}  "
                  f"{r['top']:<24} {r['question']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=Path, default=EXAMPLES / "docs", help="documents to ingest (default examples/docs)")
    ap.add_argument("--questions", type=Path, default=EXAMPLES / "questions.jsonl", help="the question set")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 5], help="cut-offs (default 1 3 5)")
    ap.add_argument("--mode", default=None, help="passed to store.search(mode=...) when given")
    ap.add_argument("--max-tokens", type=int, default=60, help="chunk size (default 60, as the demo)")
    ap.add_argument("--overlap", type=int, default=10, help="chunk overlap (default 10, as the demo)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.mode is not None and "mode" not in inspect.signature(Store.search).parameters:
        ap.error("this lacy-mlx's Store.search has no 'mode' argument: drop --mode")
    result = measure(args.docs, args.questions, ks=sorted(set(args.k)), mode=args.mode,
                     max_tokens=args.max_tokens, overlap=args.overlap)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
