"""End-to-end demo on the embedded defaults (what `make demo` runs).

Ingests the bundled documents in examples/docs into a store with the default embedder (the MLX
MiniLM encoder when installed, the hashed embedder otherwise), then answers a few searches.
When a trained demo model ships in lacy_mlx/data/demo-model, it also runs the cascade on it.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from lacy_mlx.chunker import ChunkerConfig
from lacy_mlx.cli.search import format_table
from lacy_mlx.ingest import iter_documents
from lacy_mlx.store import Store

HERE = Path(__file__).resolve().parent
QUERIES = [
    "Where was Marie Curie born?",
    "Who wrote the first computer program?",
    "codebreaking during the Second World War",
    "X-ray images of DNA",
    "when should a small model ask for help?",
]


def run_store_demo(db: Path) -> None:
    """Ingest examples/docs into ``db`` and print the top hits for each query."""
    with Store.open(db) as store:
        t0 = time.perf_counter()
        result = store.add_documents(iter_documents([HERE / "docs"]), chunker=ChunkerConfig(max_tokens=60, overlap=10))
        took = time.perf_counter() - t0
        print(f"store {db}: embedder {store.embedder_name}; {result.added} added, {result.unchanged} unchanged, "
              f"{result.chunks} chunks in {took:.2f}s")
        for query in QUERIES:
            print(f"\n> {query}")
            print(format_table(store.search(query, k=3), width=110))


def main() -> int:
    out = HERE.parent / ".demo"
    out.mkdir(exist_ok=True)
    run_store_demo(out / "demo.db")
    return 0


if __name__ == "__main__":
    sys.exit(main())
