"""A CPU forward pass of :class:`~lacy_mlx.encoder.bert.BertModel` over packed tokens.

The padded forward spends its per-token work (every matmul, LayerNorm and GELU) on padding too,
and moves q, k and v into head-major order with three transposes and three concatenations. On
MLX's CPU backend those passes cost more than PyTorch's fused kernels, so this twin:

* keeps the residual stream packed: ``(T, H)`` with ``T`` the batch's real tokens, no padding;
* projects q, k and v with one fused matmul whose weights fold in the attention scale (times
  log2 e: scores in base 2 for :func:`~lacy_mlx.encoder.fastmath.exp2_nonpos`) and give
  each value head a column of ones (the softmax denominator then rides in the value matmul);
* gathers q, k and v into padded head-major ``(3, B, nh, L, hs + 1)`` with one ``take`` (padded
  slots repeat a real row, so their scores stay finite; their value rows, ones column included,
  are zeroed, which drops them from numerator and denominator with no (L, L) mask pass);
* shifts the softmax by a per-row upper bound ``|q_i| max_j |k_j|`` carried in the score matmul
  (q's spare column holds minus the bound, k's holds 1) instead of the row max, so no (L, L)
  reduction or subtraction pass; rows whose denominator underflows are recomputed exactly;
* gathers the attention output back to packed rows and divides by the denominator there.

The result equals the padded model's hidden states at the real tokens (a test checks it).
:class:`PackedBatch` holds the per-batch index arrays; :class:`PackedBert` the fused weights.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from lacy_mlx.encoder.bert import BertModel
from lacy_mlx.encoder.fastmath import _CHUNK_ABOVE, _CHUNK_TARGET, LOG2E, exp2_nonpos  # slices as attention_cpu

# Softmax denominators below this (bound - row max > ~55) redo the layer's attention with the
# exact row max. On all-MiniLM-L6-v2 the gap peaks near 43 (1.2M rows measured), so this is rare.
_UNDERFLOW = 2.0 ** -80


@dataclass(frozen=True)
class PackedBatch:
    """Index arrays for one batch of ``B`` sequences of lengths ``lengths`` (all >= 1).

    ``ids``/``types``/``positions``: ``(T,)`` packed token columns. ``gather``: ``(3*B*nh*L,)``
    rows of the ``(T*3*nh, hs1)`` view of the fused projection, in ``(3, B, nh, L)`` order.
    ``scatter``: ``(T*nh,)`` rows of the ``(B*nh*L, hs1)`` attention output back to packed
    ``(T, nh)`` order. ``value_keep``: ``(B, 1, L, 1)`` 1 for real keys, 0 for padding.
    ``pool``: ``(B, T)`` mean-pooling weights; ``starts``: ``(B,)`` each sequence's first row.
    """

    lengths: tuple[int, ...]
    width: int
    ids: mx.array
    types: mx.array
    positions: mx.array
    gather: mx.array
    scatter: mx.array
    value_keep: mx.array
    pool: mx.array
    starts: mx.array

    @classmethod
    def build(cls, ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]], n_heads: int) -> "PackedBatch":
        """From token ids and type ids per sequence; raises ``ValueError`` on an empty sequence."""
        lengths = np.array([len(row) for row in ids], dtype=np.int64)
        if lengths.size == 0 or lengths.min() < 1:
            raise ValueError("every sequence needs at least one token")
        B, L, T = len(lengths), int(lengths.max()), int(lengths.sum())
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        col = np.arange(L)
        real = col[None, :] < lengths[:, None]  # (B, L)
        # Padded slots point at their sequence's first token: finite values the key mask hides.
        tok = np.where(real, starts[:, None] + col[None, :], starts[:, None])  # (B, L)
        part, head = np.arange(3)[:, None, None, None], np.arange(n_heads)[None, None, :, None]
        gather = (tok[None, :, None, :] * 3 + part) * n_heads + head  # (3, B, nh, L)
        seq = np.repeat(np.arange(B), lengths)
        pos = np.arange(T) - np.repeat(starts, lengths)
        scatter = (seq[:, None] * n_heads + np.arange(n_heads)[None, :]) * L + pos[:, None]  # (T, nh)
        pool = np.zeros((B, T), dtype=np.float32)
        pool[seq, np.arange(T)] = 1.0 / lengths[seq]
        as_i32 = lambda a: mx.array(np.ascontiguousarray(a, dtype=np.int32).reshape(-1))  # noqa: E731
        return cls(
            lengths=tuple(int(n) for n in lengths),
            width=L,
            ids=as_i32(np.concatenate([np.asarray(r) for r in ids])),
            types=as_i32(np.concatenate([np.asarray(r) for r in types])),
            positions=as_i32(pos),
            gather=as_i32(gather),
            scatter=as_i32(scatter),
            value_keep=mx.array(real.astype(np.float32).reshape(B, 1, L, 1)),
            pool=mx.array(pool),
            starts=as_i32(starts),
        )


@dataclass(frozen=True)
class _FusedLayer:
    qkv_w: mx.array  # (3 * nh * hs1, H): per head [scale * q, 0], [k, 0], [v, 0]
    qkv_b: mx.array  # (3 * nh * hs1,): k and v heads' last entry is 1 (bound and denominator columns)
    out: nn.Module
    out_norm: nn.Module
    inter: nn.Module
    act: object
    ffn_out: nn.Module
    ffn_norm: nn.Module


def _head_cols(w: mx.array, n_heads: int, fill: float) -> mx.array:
    """``(nh * hs, ...) -> (nh * (hs + 1), ...)``: each head's rows plus one row of ``fill``."""
    heads = w.reshape(n_heads, -1, *w.shape[1:])
    extra = mx.full((n_heads, 1, *w.shape[1:]), fill, dtype=w.dtype)
    return mx.concatenate([heads, extra], axis=1).reshape(-1, *w.shape[1:])


def supports(model: BertModel) -> bool:
    """Whether :class:`PackedBert` can run ``model``: dense (not quantized) q/k/v projections."""
    return all(type(getattr(layer.attention, "self").query) is nn.Linear for layer in model.encoder.layer)


class PackedBert:
    """``PackedBert(model)(batch) -> (T, H)`` hidden states of ``batch``'s real tokens.

    Shares ``model``'s parameters except the fused q/k/v weights, built once here (so later
    in-place updates to ``model``'s q/k/v are not seen). Attention runs in float32.
    """

    def __init__(self, model: BertModel) -> None:
        if not supports(model):
            raise ValueError("PackedBert needs dense q/k/v projections (quantized models use BertModel)")
        args = model.args
        self.model = model
        self.n_heads = args.num_attention_heads
        self.head_dim = args.hidden_size // args.num_attention_heads
        scale = self.head_dim ** -0.5 * LOG2E  # scores in base-2 units for exp2_nonpos
        self.layers = []
        for layer in model.encoder.layer:
            proj = getattr(layer.attention, "self")
            ws = [proj.query.weight * scale, proj.key.weight, proj.value.weight]
            bs = [proj.query.bias * scale, proj.key.bias, proj.value.bias]
            w = mx.concatenate([_head_cols(t, self.n_heads, 0.0) for t in ws], axis=0)
            b = mx.concatenate([_head_cols(t, self.n_heads, f) for t, f in zip(bs, (0.0, 1.0, 1.0))])
            self.layers.append(_FusedLayer(
                w, b, layer.attention.output.dense, layer.attention.output.LayerNorm,
                layer.intermediate.dense, layer.intermediate.act, layer.output.dense, layer.output.LayerNorm,
            ))
        self._mean_col = mx.full((args.hidden_size, 1), 1.0 / args.hidden_size, dtype=model.embeddings.LayerNorm.weight.dtype)
        mx.eval([(f.qkv_w, f.qkv_b) for f in self.layers], self._mean_col)

    def __call__(self, batch: PackedBatch) -> mx.array:
        x, lows = self._forward(batch, exact=False)
        mx.eval(x, lows)  # one sync per batch: a check per layer splits MLX's graph and costs more
        if lows.item() < _UNDERFLOW:  # some softmax row underflowed under its bound: redo exactly
            x, _ = self._forward(batch, exact=True)
        return x

    def _forward(self, batch: PackedBatch, exact: bool) -> tuple[mx.array, mx.array]:
        """Hidden states and the smallest softmax denominator over all layers."""
        emb = self.model.embeddings
        x = emb.word_embeddings(batch.ids) + emb.token_type_embeddings(batch.types)
        x = self._norm(emb.LayerNorm, x + emb.position_embeddings(batch.positions))  # (T, H)
        lows = []
        for layer in self.layers:
            x, low = self._layer(layer, x, batch, exact)
            lows.append(low)
        return x, mx.min(mx.stack(lows))

    def _layer(self, f: _FusedLayer, x: mx.array, batch: PackedBatch, exact: bool) -> tuple[mx.array, mx.array]:
        T, H = x.shape
        nh, hs1 = self.n_heads, self.head_dim + 1
        B, L = len(batch.lengths), batch.width
        qkv = mx.addmm(f.qkv_b, x, f.qkv_w.T).astype(mx.float32)  # (T, 3 * nh * hs1)
        heads = mx.take(qkv.reshape(-1, hs1), batch.gather, axis=0).reshape(3, B, nh, L, hs1)
        q, k, v = heads[0], heads[1], heads[2]
        if min(batch.lengths) < L:
            v = v * batch.value_keep  # padded keys then add nothing to either sum
        ev = _attention(q if exact else _with_bound(q, k), k, v, exact)
        g = mx.take(ev.reshape(-1, hs1), batch.scatter, axis=0).reshape(T, nh, hs1)
        ctx = (g[..., :-1] / g[..., -1:]).reshape(T, H).astype(x.dtype)
        x = self._norm(f.out_norm, x + f.out(ctx))
        return self._norm(f.ffn_norm, x + f.ffn_out(f.act(f.inter(x)))), mx.min(ev[..., -1])

    def _norm(self, norm: nn.LayerNorm, x: mx.array) -> mx.array:
        """``norm(x)`` for ``(T, H)`` rows, two-pass, with the row means as matmuls.

        MLX's CPU reductions (and ``mx.fast.layer_norm``) run ~2x slower than a BLAS product with
        a ``1/H`` column; the result matches ``nn.LayerNorm`` to float32 rounding (a test checks).
        """
        d = x - x @ self._mean_col
        return d * mx.rsqrt((d * d) @ self._mean_col + norm.eps) * norm.weight + norm.bias


def _with_bound(q: mx.array, k: mx.array) -> mx.array:
    """``q`` with its spare last column set to ``-|q_i| * max_j |k_j|`` per sequence and head.

    By Cauchy-Schwarz that bounds every real score of row ``i`` (padded key slots repeat a real
    row), so ``q_i . k_j`` with k's last column 1 is ``score - bound <= 0``: exp cannot overflow.
    """
    qn = mx.sqrt(mx.sum(q * q, axis=-1, keepdims=True))  # spare columns are 0 here
    kn = mx.sqrt(mx.max(mx.sum(k[..., :-1] * k[..., :-1], axis=-1, keepdims=True), axis=-2, keepdims=True))
    return mx.concatenate([q[..., :-1], -(qn * kn)], axis=-1)


def _attention(q: mx.array, k: mx.array, v: mx.array, exact: bool) -> mx.array:
    """``softmax(q k^T) [v, 1]`` unnormalised: ``(B, nh, L, hs1)``, last column = sum.

    ``exact=False``: q already carries the shift (see :func:`_with_bound`); ``exact=True``: q's
    last column is 0 and the row max is subtracted. Padded keys are hidden by their zero ``v``.
    """
    B, nh, L, _ = q.shape
    if B > 1 and B * nh * L * L > _CHUNK_ABOVE:
        step = max(1, _CHUNK_TARGET // (nh * L * L))
        return mx.concatenate(
            [_attention(q[i : i + step], k[i : i + step], v[i : i + step], exact) for i in range(0, B, step)], axis=0)
    scores = q @ k.swapaxes(-1, -2)  # (B, nh, L, L)
    if exact:
        scores = scores - mx.max(scores, axis=-1, keepdims=True)
    return exp2_nonpos(scores) @ v
