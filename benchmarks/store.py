"""Store speed: ingest rate, query latency of exact sqlite-vec vs the fast mirror vs numpy, recall, file size.

Run: make bench, or `python benchmarks/store.py [--sizes 10000 100000] [--dim 384] [--queries 50]`.
Prints a table and one JSON line. Vectors are random unit vectors, 10 chunks per document. The three
search paths are timed per query in rotating order, so a busy machine slows them alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.platform import openblas_preloaded
from lacy_mlx.store import DocumentInput, Store

CHUNKS_PER_DOC = 10


def _interleaved_ms(fns: dict, queries) -> dict[str, float]:
    """Median ms per query of each function, timed in rotating order per query so machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i, q in enumerate(queries):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            fns[name](q)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_size(n: int, dim: int, n_queries: int, k: int, rng: np.random.Generator) -> dict:
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs = [DocumentInput(chunks=[f"chunk {i + j}" for j in range(CHUNKS_PER_DOC)],
                          vectors=vecs[i : i + CHUNKS_PER_DOC], external_id=f"doc{i}")
            for i in range(0, n, CHUNKS_PER_DOC)]
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        with Store.open(path, embedder=HashedEmbedder(dim=dim)) as store:
            t0 = time.perf_counter()
            store.add_documents(docs, batch_size=100)
            ingest_s = time.perf_counter() - t0
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            file_bytes = store.stats()["file_bytes"]
            t0 = time.perf_counter()
            store.search(queries[0], k=k, fast=True)  # builds the mirror once
            mirror_load_s = time.perf_counter() - t0

            def numpy_topk(q):
                scores = vecs @ q
                top = np.argpartition(-scores, k)[:k]
                return top[np.argsort(-scores[top])]

            ms = _interleaved_ms({"exact": lambda q: store.search(q, k=k, fast=False),
                                  "fast": lambda q: store.search(q, k=k, fast=True), "numpy": numpy_topk}, queries)
            exact_ms, fast_ms, numpy_ms = ms["exact"], ms["fast"], ms["numpy"]
            recall = []
            for q in queries:
                want = {h.chunk_id for h in store.search(q, k=k, fast=False)}
                got = {h.chunk_id for h in store.search(q, k=k, fast=True)}
                recall.append(len(want & got) / k)

    return {"chunks": n, "dim": dim, "ingest_vectors_per_s": n / ingest_s, "exact_ms": exact_ms,
            "fast_ms": fast_ms, "numpy_ms": numpy_ms, "fast_recall_at_k": float(np.mean(recall)),
            "fast_over_numpy": fast_ms / numpy_ms, "exact_over_fast": exact_ms / fast_ms,
            "mirror_load_s": mirror_load_s, "file_mb": file_bytes / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = [bench_size(n, args.dim, args.queries, args.k, rng) for n in args.sizes]
    print(f"store benchmark ({args.dim}-d, k={args.k}, median of {args.queries} queries; "
          f"OpenBLAS preloaded: {openblas_preloaded()})")
    print(f"{'chunks':>8} {'ingest/s':>9} {'exact ms':>9} {'fast ms':>8} {'numpy ms':>9} {'fast/np':>8} "
          f"{'exact/fast':>10} {'recall':>7} {'MB':>7}")
    for r in rows:
        print(f"{r['chunks']:>8} {r['ingest_vectors_per_s']:>9.0f} {r['exact_ms']:>9.2f} {r['fast_ms']:>8.2f} "
              f"{r['numpy_ms']:>9.2f} {r['fast_over_numpy']:>8.2f} {r['exact_over_fast']:>10.1f} "
              f"{r['fast_recall_at_k']:>7.3f} {r['file_mb']:>7.1f}")
    print(json.dumps({"benchmark": "store", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
