"""Training tokens/s: lacy-mlx's trainer step against mlx-lm's trainer, same model, batch, length.

Both train the same llama-style model (mlx_lm.models.llama) with AdamW for the same number of
updates on batches of the same shape; tokens/s is the median over report windows after the first
(which holds compilation). Peers, in one run:

- ``mlx-lm``: ``mlx_lm.tuner.trainer.train`` with every parameter trainable (its compiled step),
  its own tokens/s reports;
- ``lacy plain``: lacy-mlx's compiled step with the plain LM objective (same work as mlx-lm,
  plus gradient clipping);
- ``lacy lacy``: the LaCy objective (span scoring and top-q selection in the graph);
- ``lacy lacy+tower``: LaCy plus the query tower's InfoNCE against 2,000 passage embeddings.

The lacy peers run one window each inside mlx-lm's report callback, so all peers alternate and
share the machine's load. Prints ratios against mlx-lm and one JSON line.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/train.py [--iters 30]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx_lm.models import llama
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.trainer import TrainingArgs
from mlx_lm.tuner.trainer import train as mlx_lm_train

from lacy_mlx.query_tower import QueryTower
from lacy_mlx.train.config import preset
from lacy_mlx.train.data import BatchIterator, TokenStream
from lacy_mlx.train.model import TrainModel, llama_args
from lacy_mlx.train.trainer import Stepper, make_loss


def synthetic_stream(n_tokens: int, vocab: int, seed: int = 0) -> TokenStream:
    """Random ids with a factual span of 1-3 tokens about every 6 tokens and a gold passage at each."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, vocab, n_tokens).astype(np.int32)
    span = np.zeros(n_tokens, np.int32)
    gold = np.full(n_tokens, -1, np.int32)
    pos, sid = 3, 1
    while pos < n_tokens - 3:
        width = int(rng.integers(1, 4))
        span[pos:pos + width] = sid
        gold[pos] = int(rng.integers(0, 2000))
        pos += width + int(rng.integers(3, 9))
        sid += 1
    return TokenStream(ids, span, np.zeros(n_tokens, np.int32), gold)


class LacyPeer:
    """lacy-mlx's compiled step on prepared batches; ``window(n)`` times ``n`` updates."""

    def __init__(self, cfg, vocab: int, stream: TokenStream, n_batches: int, tower: bool) -> None:
        mx.random.seed(0)
        self.cfg = cfg
        model = TrainModel(llama.Model(llama_args(cfg, vocab)), QueryTower(cfg.hidden_size, 384) if tower else None)
        mx.eval(model.parameters())
        table = mx.array(np.random.default_rng(1).standard_normal((2000, 384)).astype(np.float32))
        table = table / mx.linalg.norm(table, axis=-1, keepdims=True)
        opt = optim.AdamW(learning_rate=1e-3, weight_decay=0.01)
        self.stepper = Stepper(model, opt, make_loss(cfg, call_id=1), cfg, None)
        it = BatchIterator(stream, batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=0,
                           tower_slots=cfg.tower_slots)
        self.batches = [tuple(mx.array(a) for a in next(it).arrays()) + (mx.zeros((1,)), table)
                        for _ in range(n_batches)]
        self.i = 0
        self.tps: list[float] = []

    def window(self, n: int) -> None:
        elapsed = 0.0
        for _ in range(n):
            arrays = self.batches[self.i % len(self.batches)]
            self.i += 1
            tic = time.perf_counter()
            self.stepper.update([arrays])
            elapsed += time.perf_counter() - tic
        self.tps.append(n * self.cfg.batch_size * self.cfg.seq_len / elapsed)


class Interleave(TrainingCallback):
    """At each mlx-lm report, run one window of every lacy peer: all peers share the machine's noise."""

    def __init__(self, peers: dict[str, LacyPeer], report: int) -> None:
        self.peers, self.report, self.tps = peers, report, []

    def on_train_loss_report(self, info: dict) -> None:
        self.tps.append(info["tokens_per_second"])
        for peer in self.peers.values():
            peer.window(self.report)


def run(cfgs: dict, vocab: int, stream: TokenStream, rows: list[np.ndarray], iters: int,
        report: int) -> dict[str, float]:
    peers = {name: LacyPeer(cfg, vocab, stream, 8, tower) for name, (cfg, tower) in cfgs.items()}
    for peer in peers.values():
        peer.window(1)  # compile outside the timed windows
        peer.tps.clear()
    mx.random.seed(0)
    model = llama.Model(llama_args(next(iter(cfgs.values()))[0], vocab))
    mx.eval(model.parameters())
    cb = Interleave(peers, report)
    base = next(iter(cfgs.values()))[0]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArgs(batch_size=base.batch_size, iters=iters, steps_per_report=report,
                            steps_per_save=10**9, max_seq_length=base.seq_len + 1,
                            adapter_file=str(Path(tmp) / "adapters.safetensors"))
        mlx_lm_train(model, optim.AdamW(learning_rate=1e-3, weight_decay=0.01),
                     [(r.tolist(), 0) for r in rows], args=args, training_callback=cb)
    out = {"mlx-lm": statistics.median(cb.tps[1:])}  # its first window holds compilation
    out.update({name: statistics.median(p.tps[1:]) for name, p in peers.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--report", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=2048)
    a = ap.parse_args()
    base = dict(hidden_size=a.hidden, num_layers=a.layers, intermediate_size=a.hidden * 8 // 3 // 32 * 32,
                num_heads=4, num_kv_heads=4, batch_size=a.batch, seq_len=a.seq, progress=False)
    stream = synthetic_stream(a.batch * a.seq * 10 + 1, a.vocab)
    rows = [stream.ids[i * a.seq:(i + 1) * a.seq + 1] for i in range(a.batch * 8)]
    cfgs = {
        "lacy plain": (preset("tiny", **base, objective="plain", tower_weight=0.0), False),
        "lacy lacy": (preset("tiny", **base, objective="lacy", tower_weight=0.0), False),
        "lacy lacy+tower": (preset("tiny", **base, objective="lacy", tower_weight=0.1), True),
    }
    results = run(cfgs, a.vocab, stream, rows, a.iters, a.report)
    peer = results["mlx-lm"]
    print(f"model hidden={a.hidden} layers={a.layers} vocab={a.vocab}; batch {a.batch} x {a.seq} tokens")
    for name, tps in results.items():
        print(f"{name:16s} {tps:10.0f} tokens/s   ratio vs mlx-lm {tps / peer:5.2f}x")
    print(json.dumps({"benchmark": "train", "tokens_per_s": {k: round(v, 1) for k, v in results.items()},
                      "ratio_vs_mlx_lm": {k: round(v / peer, 3) for k, v in results.items()},
                      "shape": {"hidden": a.hidden, "layers": a.layers, "batch": a.batch, "seq": a.seq,
                                "vocab": a.vocab}}))


if __name__ == "__main__":
    main()
