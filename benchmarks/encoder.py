"""Sentences/s of the MLX document encoder against the PyTorch model of the same checkpoint.

Both sides embed the same texts with the same tokenizer, the same length-sorted batches, mean
or CLS pooling as the folder says and L2 normalisation, with no autograd; torch uses --threads
(default: every core), runs alternate so background load hits both alike. Runs on MLX's default
device (a GPU when MLX has one) and, when that is a GPU, on MLX's CPU too. Prints medians, the
ratios and one JSON line.

PyTorch runs in a worker process started without ``LD_PRELOAD``, as a user runs it: in this
process the preloaded OpenBLAS would take over torch's own (MKL) ``sgemm`` symbols, and with
more than one thread OpenBLAS's pool and torch's OpenMP pool then fight for the cores (2 cores
here: 24 s instead of 2.6 s for 64 long texts). ``--torch-in-process`` keeps the old layout.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/encoder.py [--n 256]
    # per core, robust on a busy machine:
    LD_PRELOAD=... python benchmarks/encoder.py --threads 1 --n 128
    # store-sized chunks (most texts hit the 256-token limit):
    LD_PRELOAD=... python benchmarks/encoder.py --n 64 --mean-words 200
    # without the compiled CPU kernels (lacy_mlx.kernels.cpu_build), MLX ops only:
    LACY_MLX_CPU_KERNELS=0 LD_PRELOAD=... python benchmarks/encoder.py
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import time

import mlx.core as mx
import numpy as np

from lacy_mlx.encoder import MLXEncoder
from lacy_mlx.kernels.cpu_build import cpu_kernels
from lacy_mlx.platform import openblas_preloaded, usable_cores

_WORDS = ("the of and in to a was born city river capital king queen university museum year war "
          "science physics chemistry prize award mission moon ocean mountain village company founded "
          "president minister empire century library painting novel author composer symphony").split()


def make_texts(n: int, mean_words: int = 30, seed: int = 0) -> list[str]:
    """``n`` texts of 4 to 300 words, exponentially distributed around ``mean_words``."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = int(min(300, 4 + rng.expovariate(1 / mean_words)))
        texts.append(" ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + ".")
    return texts


def torch_embedder(enc: MLXEncoder, threads: int):
    """A PyTorch twin of ``enc.embed_batch`` over the same folder, tokenizer and batching."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    model = transformers.BertModel.from_pretrained(str(enc.source.path)).eval()
    tok, pooling = enc.loaded.tokenizer, enc.loaded.pooling

    def embed(texts: list[str]) -> np.ndarray:
        encs = tok.encode_batch(texts)
        out = np.empty((len(texts), enc.dim), dtype=np.float32)
        with torch.inference_mode():
            for rows in enc.plan_batches([len(e.ids) for e in encs]):  # the MLX side's batches
                width = max(len(encs[i].ids) for i in rows)
                ids = torch.zeros((len(rows), width), dtype=torch.long)
                mask = torch.zeros_like(ids)
                for r, i in enumerate(rows):
                    ids[r, : len(encs[i].ids)] = torch.tensor(encs[i].ids)
                    mask[r, : len(encs[i].ids)] = 1
                h = model(input_ids=ids, attention_mask=mask).last_hidden_state
                if pooling == "cls":
                    v = h[:, 0]
                else:
                    m = mask[..., None].float()
                    v = (h * m).sum(1) / m.sum(1)
                out[rows] = torch.nn.functional.normalize(v, dim=-1).numpy()
        return out

    return embed


class TorchWorker:
    """The torch side in a child process without ``LD_PRELOAD``; call it like an embedder.

    The child builds the same encoder (tokenizer, batch plan) and times each run itself; the
    parent reads the seconds and the vectors back, so pipe and pickling costs are not counted.
    """

    def __init__(self, argv: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv, "--torch-worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.seconds = 0.0

    def __call__(self, texts: list[str]) -> np.ndarray:
        pickle.dump(texts, self.proc.stdin)
        self.proc.stdin.flush()
        reply = pickle.load(self.proc.stdout)
        if isinstance(reply, str):
            raise RuntimeError(f"torch worker failed: {reply}")
        self.seconds, vectors = reply
        return vectors

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve_torch(a: argparse.Namespace) -> None:
    """The worker loop: texts in (pickled on stdin), (seconds, vectors) out, until stdin closes."""
    stdout = os.fdopen(os.dup(1), "wb")  # the protocol's own copy of stdout ...
    os.dup2(2, 1)  # ... and anything a library prints goes to stderr instead
    mx.set_default_device(mx.cpu)  # the CPU batch plan, as the in-process torch side used
    enc = MLXEncoder(a.model, dtype=a.dtype, batch_size=a.batch_size, max_batch_tokens=a.max_batch_tokens)
    embed = torch_embedder(enc, a.threads)
    stdin = sys.stdin.buffer
    while True:
        try:
            texts = pickle.load(stdin)
        except EOFError:
            return
        try:
            t0 = time.perf_counter()
            vectors = embed(texts)
            reply = (time.perf_counter() - t0, vectors)
        except Exception as exc:  # reported to the parent, which raises
            reply = f"{type(exc).__name__}: {exc}"
        pickle.dump(reply, stdout)
        stdout.flush()


def time_interleaved(fns: dict, texts: list[str], repeats: int) -> tuple[dict, dict]:
    """Median seconds per function, runs interleaved so background load hits every side alike.

    A function with a ``seconds`` attribute (:class:`TorchWorker`) reports its own time.
    """
    results = {name: fn(texts) for name, fn in fns.items()}  # warm-up (allocations, kernel builds)
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn(texts)
            elapsed = time.perf_counter() - t0
            times[name].append(getattr(fn, "seconds", elapsed))
    return {name: statistics.median(ts) for name, ts in times.items()}, results


def on_device(fn, device):
    """``fn`` run with ``device`` as MLX's default (the encoder picks its kernels by device)."""
    def run(texts: list[str]) -> np.ndarray:
        before = mx.default_device()
        mx.set_default_device(device)
        try:
            return fn(texts)
        finally:
            mx.set_default_device(before)
    return run


def worker_argv(a: argparse.Namespace) -> list[str]:
    """The options the torch worker needs to build the same encoder and batch plan."""
    argv = ["--batch-size", str(a.batch_size), "--dtype", a.dtype, "--threads", str(a.threads)]
    if a.model is not None:
        argv += ["--model", str(a.model)]
    if a.max_batch_tokens is not None:
        argv += ["--max-batch-tokens", str(a.max_batch_tokens)]
    return argv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="encoder folder or name (default all-MiniLM-L6-v2)")
    p.add_argument("--n", type=int, default=256, help="sentences per run")
    p.add_argument("--mean-words", type=int, default=30, help="text length (200: store-sized chunks)")
    p.add_argument("--batch-size", type=int, default=64, help="most texts per forward pass")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="token budget per pass (default: the encoder's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=usable_cores(),
                   help="cores for each side: torch's threads, the MLX encoder's cpu_threads")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--torch-in-process", action="store_true",
                   help="run torch in this process (it then shares the preloaded OpenBLAS)")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_worker:
        return serve_torch(a)

    texts = make_texts(a.n, a.mean_words)
    enc = MLXEncoder(a.model, dtype=a.dtype, batch_size=a.batch_size, max_batch_tokens=a.max_batch_tokens,
                     cpu_threads=a.threads)  # as many cores as torch gets
    tokens = sum(len(ids) for ids in enc.tokenize(texts))
    print(f"model {enc.name}  texts {a.n}  tokens {tokens}  batch {a.batch_size}  dtype {a.dtype}  "
          f"cores {os.cpu_count()}  threads {a.threads} (MLX: streams x BLAS threads, torch: intra-op)  "
          f"openblas_preloaded {openblas_preloaded()}  cpu_kernels {cpu_kernels() is not None}")
    record: dict = {"bench": "encoder", "model": enc.name, "n": a.n, "mean_words": a.mean_words, "tokens": tokens,
                    "batch_size": a.batch_size, "max_batch_tokens": a.max_batch_tokens, "dtype": a.dtype,
                    "cores": os.cpu_count(), "threads": a.threads,
                    "openblas_preloaded": openblas_preloaded(), "cpu_kernels": cpu_kernels() is not None}

    devices = [mx.default_device()]
    if devices[0] != mx.cpu:
        devices.append(mx.cpu)
    fns = {f"mlx_{dev.type.name}": on_device(enc.embed_batch, dev) for dev in devices}
    worker = None
    if a.torch_in_process:
        fns["torch_cpu"] = on_device(torch_embedder(enc, a.threads), mx.cpu)  # CPU batch plan
    elif not a.no_torch:
        worker = TorchWorker(worker_argv(a))
        fns["torch_cpu"] = worker
    record["torch_process"] = "same" if a.torch_in_process else "none" if a.no_torch else "worker"
    try:
        secs, results = time_interleaved(fns, texts, a.repeats)
    finally:
        if worker is not None:
            worker.close()
    for name, sec in secs.items():
        record[f"{name}_sent_per_s"] = round(a.n / sec, 1)
        print(f"{name:10s} {a.n / sec:9.1f} sentences/s  (median {sec * 1e3:.1f} ms)")
    if "torch_cpu" in secs:
        for name in secs:
            if name.startswith("mlx_"):
                record[f"{name}_over_torch"] = round(secs["torch_cpu"] / secs[name], 3)
                print(f"ratio {name}/torch_cpu = {record[f'{name}_over_torch']:.2f}x")
        ours, ref = results[next(iter(fns))], results["torch_cpu"]
        record["min_cosine"] = float((ours * ref).sum(axis=1).min())
        print(f"min cosine MLX vs torch: {record['min_cosine']:.6f}")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
