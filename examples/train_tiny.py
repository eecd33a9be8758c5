"""Train a tiny LaCy model on the synthetic knowledge base, then ask it with and without calls.

    python examples/train_tiny.py --out runs/tiny              # the `tiny` preset, under a minute on CPU
    python examples/train_tiny.py --out runs/tiny --steps 200

The model learns to emit <CALL> where it would get a fact wrong; its evidence passages go into
a store, and at each call the store's answer is injected inline.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lacy_mlx
from lacy_mlx.embed import resolve_embedder
from lacy_mlx.ingest import read_documents
from lacy_mlx.store import Store
from lacy_mlx.train import preset, train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=None, help="updates (default: the preset's)")
    args = p.parse_args(argv)

    cfg = preset("tiny", **({"steps": args.steps} if args.steps else {}))
    result = train(cfg, args.out)
    last = result.log[-1] if result.log else {}
    print(f"trained {result.out_dir}: {result.step} updates, last loss {last.get('loss', float('nan')):.3f}")
    # The passages are embedded with the embedder the query tower was trained against.
    with Store.open(args.out / "kb.db", embedder=resolve_embedder(cfg.embedder)) as store:
        store.add_documents(read_documents(args.out / "data" / "evidence.jsonl"))
        lacy = lacy_mlx.load(args.out, db=store)
        person = json.loads((args.out / "data" / "ground_truth.json").read_text())["people"][0]["name"]
        prompt = f"{person} was born in"
        alone = lacy.generate(prompt, max_tokens=24, mode="off").text
        helped = lacy.generate(prompt, max_tokens=24)
        print(f"alone:      {prompt}{alone}")
        print(f"with calls: {prompt}{helped.text}  ({len(helped.calls)} calls, sources: {helped.sources})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
