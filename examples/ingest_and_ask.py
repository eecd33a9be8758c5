"""A folder in, questions out, with sources.

    python examples/ingest_and_ask.py examples/docs "Where was Marie Curie born?" "Who was Ada Lovelace?"
    python examples/ingest_and_ask.py DOCS "question" --model path/to/mlx-model --db kb.db

Ingests the folder's .txt/.md/.jsonl files into the store (re-runs add only what changed), then
answers each question with the cascade: where the gate fires, the store is searched and the
evidence goes into the model's context. Prints the answer and the documents it drew on.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import lacy_mlx
from lacy_mlx.ingest import iter_documents
from lacy_mlx.store import Store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("questions", nargs="+")
    p.add_argument("--model", help="MLX model folder (default: the embedded model)")
    p.add_argument("--db", type=Path, help="store file (default: a temporary one)")
    p.add_argument("--max-tokens", type=int, default=96)
    args = p.parse_args(argv)

    db = args.db or Path(tempfile.mkdtemp()) / "kb.db"
    with Store.open(db) as store:
        added = store.add_documents(iter_documents([args.folder]))
        print(f"{db}: {added.added} documents added, {added.unchanged} unchanged, {added.chunks} chunks")
        lacy = lacy_mlx.load(args.model, db=store)
        for question in args.questions:
            result = lacy.generate([{"role": "user", "content": question}], max_tokens=args.max_tokens)
            print(f"\nQ: {question}\nA: {result.text.strip()}")
            print(f"   {len(result.calls)} calls; sources: {'; '.join(result.sources) or 'none'}")
            for call in result.calls:
                best = call.hits[0] if call.hits else None
                hit = f"{best.title or best.external_id} ({best.score:.2f})" if best else "no hit"
                print(f"   - step {call.step} ({call.reason}): {call.query!r} -> {hit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
