"""The MLX training loop: compiled step, AdamW with warmup + cosine decay, clipping, accumulation.

``train(cfg, out_dir)`` prepares the corpus (:mod:`lacy_mlx.train.prepare`), trains an mlx-lm llama
model with the configured objective (:mod:`lacy_mlx.train.objectives`) plus, when ``tower_weight > 0``,
the query tower's InfoNCE loss, checkpoints every ``save_every`` updates, logs JSON lines to
``out_dir/train_log.jsonl`` and exports a folder that ``mlx_lm.load`` and lacy-mlx load.
Launched under ``mlx.launch`` it trains data-parallel (see :mod:`lacy_mlx.train.distributed`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map

from lacy_mlx.query_tower import QueryTower
from lacy_mlx.runtime.events import call_rate
from lacy_mlx.runtime.hidden import output_head
from lacy_mlx.tokens import CALL_TOKEN
from lacy_mlx.train import distributed
from lacy_mlx.train.checkpoint import load_checkpoint, reseed, save_checkpoint
from lacy_mlx.train.config import TrainConfig
from lacy_mlx.train.data import BatchIterator
from lacy_mlx.train.model import TrainModel, llama_args
from lacy_mlx.train.objectives import logsumexp, select_calls, token_losses


@dataclass
class TrainResult:
    """What a run did: the output folder, the update step reached and the logged records."""

    out_dir: Path
    step: int
    log: list[dict] = field(default_factory=list)


def make_optimizer(cfg: TrainConfig) -> optim.Optimizer:
    """AdamW with linear warmup then cosine decay to ``lr * min_lr_ratio``."""
    warm = max(1, min(cfg.warmup_steps, cfg.steps - 1))
    schedule = optim.join_schedules(
        [optim.linear_schedule(cfg.lr / warm, cfg.lr, warm),
         optim.cosine_decay(cfg.lr, max(1, cfg.steps - warm), cfg.lr * cfg.min_lr_ratio)],
        [warm],
    )
    return optim.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)


def make_loss(cfg: TrainConfig, call_id: int):
    """The loss of one micro-batch: returns (total, lm_loss, tower_loss, calls, tokens)."""

    def loss_fn(model, x, y, weight, full, copy, eligible, span, first, t_idx, t_gold, t_mask, ref_nll, table):
        h, logits = model(x)
        select = partial(select_calls, cfg.objective, span=span, first=first, eligible=eligible,
                         ref_nll=ref_nll, q=cfg.q, budget=cfg.budget, span_reduce=cfg.span_reduce,
                         call_at=cfg.call_at)
        per_tok, call = token_losses(logits, y, call_id, full, cfg.objective, select, fact=span > 0,
                                     renormalize=cfg.renormalize, copy=copy, copy_weight=cfg.copy_weight)
        ntok = weight.sum()
        lm_loss = (per_tok * weight).sum() / ntok
        total, tower_loss = lm_loss, mx.array(0.0)
        if model.has_tower:
            q = model.tower(h.reshape(-1, h.shape[-1])[t_idx])  # (M, D)
            sims = (q @ table.T) / cfg.tower_temperature  # (M, N)
            ce = logsumexp(sims) - mx.take_along_axis(sims, t_gold[:, None], axis=-1)[:, 0]
            tower_loss = (ce * t_mask).sum() / mx.maximum(t_mask.sum(), 1)
            total = lm_loss + cfg.tower_weight * tower_loss
        calls = (call & (weight > 0)).sum()
        return total, lm_loss, tower_loss, calls, ntok

    return loss_fn


def build_model(cfg: TrainConfig, vocab_size: int, embed_dim: int | None) -> TrainModel:
    from mlx_lm.models import llama

    mx.random.seed(cfg.seed)
    lm = llama.Model(llama_args(cfg, vocab_size))
    tower = QueryTower(cfg.hidden_size, embed_dim) if embed_dim else None
    model = TrainModel(lm, tower)
    mx.eval(model.parameters())
    return model


class Stepper:
    """Owns the compiled step (mlx-lm's pattern: state in, state out) and gradient accumulation."""

    def __init__(self, model: TrainModel, optimizer: optim.Optimizer, loss_fn, cfg: TrainConfig,
                 world: mx.distributed.Group | None) -> None:
        self.model, self.optimizer, self.cfg = model, optimizer, cfg
        self.state = [model.state, optimizer.state, mx.random.state]
        value_and_grad = nn.value_and_grad(model, loss_fn)
        accum, clip = cfg.grad_accum, cfg.grad_clip
        multi = world is not None and world.size() > 1

        @partial(mx.compile, inputs=self.state, outputs=self.state)
        def step(arrays, prev_grad, do_update):
            (total, lm_loss, tower_loss, calls, ntok), grad = value_and_grad(model, *arrays)
            if prev_grad is not None:
                grad = tree_map(lambda a, b: a + b, grad, prev_grad)
            if do_update:
                if multi:
                    grad = distributed.average_gradients(grad)
                if accum > 1:
                    grad = tree_map(lambda g: g / accum, grad)
                if clip > 0:
                    grad, _ = optim.clip_grad_norm(grad, clip)
                optimizer.update(model, grad)
                grad = None
            return mx.stack([total, lm_loss, tower_loss, calls.astype(mx.float32), ntok]), grad

        self._step = step

    def update(self, micro_batches: list[tuple]) -> mx.array:
        """One optimizer update over ``grad_accum`` micro-batches; returns summed stats (5,)."""
        grad, stats = None, mx.zeros((5,))
        for i, arrays in enumerate(micro_batches):
            s, grad = self._step(arrays, grad, i == len(micro_batches) - 1)
            stats = stats + s
        mx.eval(self.state, stats)
        return stats


def _to_mx(batch, ref_nll, table) -> tuple:
    return tuple(mx.array(a) for a in batch.arrays()) + (ref_nll, table)


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, stop_at: int | None = None,
          log_callback=None) -> TrainResult:
    """Train per ``cfg`` into ``out_dir``; ``stop_at`` ends this run at that update (for resumable runs)."""
    from lacy_mlx.train.export import export_model
    from lacy_mlx.train.prepare import prepare

    out = Path(out_dir)
    world = distributed.init()
    rank, size = (world.rank(), world.size()) if world is not None else (0, 1)
    if cfg.init_from:
        raise ValueError("init_from is handled by lacy_mlx.train.finetune.finetune(), not train()")
    prep = prepare(cfg, out, write=rank == 0)
    call_id = prep.tokenizer.token_to_id(CALL_TOKEN)
    table = mx.array(prep.embeddings) if prep.embeddings is not None else mx.zeros((1, 1))
    embed_dim = int(prep.embeddings.shape[1]) if prep.embeddings is not None else None
    model = build_model(cfg, prep.tokenizer.get_vocab_size(), embed_dim)
    optimizer, stepper, batches, step = setup_run(cfg, out, model, prep, call_id, world, resume=resume)
    return run_loop(cfg, out, model, optimizer, stepper, batches, step, stop_at, _reference_nll(cfg), table, rank,
                    lambda: export_model(cfg, out, model, prep), log_callback)


def setup_run(cfg: TrainConfig, out: Path, model, prep, call_id: int, world, *, resume: bool) -> tuple:
    """Optimizer, compiled stepper, this rank's batch stream and the start step (restored when resuming)."""
    rank, size = (world.rank(), world.size()) if world is not None else (0, 1)
    optimizer = make_optimizer(cfg)
    optimizer.init(model.trainable_parameters())
    batches = BatchIterator(prep.stream, batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=cfg.seed,
                            tower_slots=cfg.tower_slots, rank=rank, world=size, evidence_lm=cfg.evidence_lm)
    step = 0
    if resume:
        r = load_checkpoint(out, model=model, optimizer=optimizer)
        step = r.step
        batches.seek(r.position)
        reseed(cfg.seed, step)
    return optimizer, Stepper(model, optimizer, make_loss(cfg, call_id), cfg, world), batches, step


def _reference_nll(cfg: TrainConfig):
    """For rho1: a function (x, y) -> the reference model's per-target NLL; else a zeros placeholder."""
    if cfg.objective != "rho1":
        return None
    from mlx_lm import load

    ref_model, _ = load(cfg.reference_model)

    @mx.compile
    def ref_nll(x, y):
        h = ref_model.model(x)
        logits = output_head(ref_model)(h).astype(mx.float32)
        return mx.logsumexp(logits, -1) - mx.take_along_axis(logits, y[..., None], -1)[..., 0]

    return ref_nll


def run_loop(cfg, out, model, optimizer, stepper, batches, step, stop_at, ref, table, rank,
             export, log_callback) -> TrainResult:
    from tqdm import tqdm

    end = min(cfg.steps, stop_at) if stop_at else cfg.steps
    log_path = out / "train_log.jsonl"
    result = TrainResult(out, step)
    bar = tqdm(total=end, initial=step, disable=not cfg.progress or rank != 0, desc="train",
               dynamic_ncols=True)
    window = mx.zeros((5,))
    elapsed, n_updates = 0.0, 0
    while step < end:
        micro = []
        for _ in range(cfg.grad_accum):
            b = next(batches)
            r = ref(mx.array(b.x), mx.array(b.y)) if ref is not None else mx.zeros((1,))
            micro.append(_to_mx(b, r, table))
        tic = time.perf_counter()
        window = window + stepper.update(micro)
        elapsed += time.perf_counter() - tic
        step += 1
        n_updates += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == end:
            rec = _record(window, n_updates, elapsed, step, optimizer, cfg)
            window, elapsed, n_updates = mx.zeros((5,)), 0.0, 0
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            result.log.append(rec)
            if rank == 0:
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
            if log_callback is not None:
                log_callback(rec)
        if step % cfg.save_every == 0 or step == end:
            if rank == 0:
                save_checkpoint(out, model=model, optimizer=optimizer, step=step, position=batches.position)
            reseed(cfg.seed, step)
    bar.close()
    result.step = step
    if rank == 0 and step >= cfg.steps:
        export()
    return result


def _record(window: mx.array, n: int, elapsed: float, step: int, optimizer, cfg: TrainConfig) -> dict:
    """Means over the last ``n`` updates (all processes); tokens/s counts every input token processed."""
    size = distributed.world_size()
    total, lm_loss, tower_loss, calls, ntok = (float(v) for v in np.array(distributed.all_sum(window)))
    micro = n * cfg.grad_accum * size
    return {
        "step": step, "loss": total / micro, "lm_loss": lm_loss / micro, "tower_loss": tower_loss / micro,
        "call_rate": call_rate(int(calls), int(ntok)) or 0.0, "tokens_per_s": n * cfg.tokens_per_step() / max(elapsed, 1e-9),
        "lr": float(optimizer.learning_rate),
    }
