"""A CPU forward pass of :class:`~lacy_mlx.encoder.bert.BertModel` over packed tokens.

The padded forward spends its per-token work (every matmul, LayerNorm and GELU) on padding too,
and moves q, k and v into head-major order with three transposes and three concatenations. On
MLX's CPU backend those passes cost more than PyTorch's fused kernels, so this twin:

* keeps the residual stream packed, ``(T, H + 1)`` for the batch's ``T`` real tokens, with a
  last column of ones: every bias rides in a weight and every residual add in its matmul
  (``addmm(x, ctx, W^T)``), so no Linear copies a broadcast bias and no add pass runs;
* projects q, k and v with one fused matmul whose weights fold in the attention scale (times
  log2 e: scores in base 2 for :func:`~lacy_mlx.encoder.fastmath.exp2_rowshift`) and give each
  value head a column of ones (the softmax denominator then rides in the value matmul);
* runs the FFN in slices of its intermediate width, so each slice's activations stay in cache;
* attends one of two ways. Long sequences: per sequence, the projection is computed transposed
  (``W x_b^T``), so every head's q, k and v are strided views BLAS reads directly: no gather,
  no padding, no mask. Many short ones: one ``take`` gathers q, k and v into padded head-major
  ``(3, B, nh, L, hs + 1)`` (padded slots repeat a real row; their value rows, ones column
  included, are zeroed, which drops them from numerator and denominator without a mask pass)
  and a second ``take`` brings the output back to packed rows.

Softmax subtracts the exact row max, so nothing can overflow or underflow for any input. The
result equals the padded model's hidden states at the real tokens (a test checks both paths).
:class:`PackedBatch` holds the per-batch index arrays; :class:`PackedBert` the fused weights.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from lacy_mlx.encoder.bert import BertModel
from lacy_mlx.encoder.fastmath import _CHUNK_ABOVE, _CHUNK_TARGET, LOG2E, exp2_rowshift  # slices as attention_cpu
from lacy_mlx.kernels.cpu_build import cpu_kernels_for

# Mean sequence length from which attention runs per sequence on views of a transposed
# projection instead of on a gathered, padded batch. Measured on MiniLM (one core): at 12
# tokens per text the batched layout ran 3x faster (27 texts per batch), at 37 about 1.3x;
# at 230 the per-sequence one ran 1.8x faster (the gather, scatter and padding cost more than
# the attention itself).
_EACH_FROM = 48
# Intermediate columns per FFN slice. The FFN runs as act(x W1_s^T) W2_s^T summed over slices,
# so each (T, slice) activation is written, activated and read back while in cache: with 512
# token rows (the CPU batch) MiniLM's FFN ran 15% faster in 4 slices of 384 than in one.
_FFN_SLICE = 384


@dataclass(frozen=True)
class PackedBatch:
    """Index arrays for one batch of ``B`` sequences of lengths ``lengths`` (all >= 1).

    ``ids``/``types``/``positions``: ``(T,)`` packed token columns. ``gather``: ``(3*B*nh*L,)``
    rows of the ``(T*3*nh, hs1)`` view of the fused projection, in ``(3, B, nh, L)`` order.
    ``scatter``: ``(T*nh,)`` rows of the ``(B*nh*L, hs1)`` attention output back to packed
    ``(T, nh)`` order. ``value_keep``: ``(B, 1, L, 1)`` 1 for real keys, 0 for padding.
    ``pool``: ``(B, T)`` mean-pooling weights; ``starts``: ``(B,)`` each sequence's first row
    (``offsets``: the same as Python ints).
    """

    lengths: tuple[int, ...]
    offsets: tuple[int, ...]
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
            offsets=tuple(int(o) for o in starts),
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
class _Norm:
    """A LayerNorm over ``(T, H + 1)`` rows whose last column is 1 and stays 1.

    ``mean_col``: ``(H + 1, 1)``, ``1/H`` then 0 (the row mean ignores the ones column);
    ``weight``/``bias``: ``(H + 1,)`` ending in 0 and 1, so the output's last column is exactly 1.
    """

    mean_col: mx.array
    weight: mx.array
    bias: mx.array
    eps: float


@dataclass(frozen=True)
class _FusedLayer:
    """One encoder layer in the ones-column layout (``H1 = H + 1`` columns, the last one 1).

    Every bias rides in a weight: the input projections' as their last column, the output
    projections' (added to the residual) in the LayerNorm bias before them, with the next
    projection's bias corrected by ``-W b`` so it sees the un-shifted input.
    """

    qkv_w: mx.array  # (3 * nh * hs1, H1): per head [scale * q, 0], [k, 0], [v, 1]: v's last column 1
    out_w: mx.array  # (H1, H): attention output weight, a zero last row (the 1 passes through)
    out_norm: _Norm
    inter_w: tuple[mx.array, ...]  # (I, H1) in column slices of the intermediate width
    act: object
    ffn_w: tuple[mx.array, ...]  # (H1, I): FFN output weight, a zero last row, in the same slices
    ffn_norm: _Norm


def _head_cols(w: mx.array, n_heads: int, fill: float) -> mx.array:
    """``(nh * hs, ...) -> (nh * (hs + 1), ...)``: each head's rows plus one row of ``fill``."""
    heads = w.reshape(n_heads, -1, *w.shape[1:])
    extra = mx.full((n_heads, 1, *w.shape[1:]), fill, dtype=w.dtype)
    return mx.concatenate([heads, extra], axis=1).reshape(-1, *w.shape[1:])


def _with_bias_col(w: mx.array, b: mx.array, shift: mx.array | None) -> mx.array:
    """``[W, b - W shift]``: ``x1 @ result.T = (x - shift) W^T + b`` for ``x1 = [x, 1]``."""
    if shift is not None:
        b = b - (w.astype(mx.float32) @ shift.astype(mx.float32)).astype(b.dtype)
    return mx.concatenate([w, b[:, None]], axis=1)


def _ffn_slices(width: int) -> list[slice]:
    """Slices of the intermediate width, ~``_FFN_SLICE`` each: a slice's activations stay in cache."""
    n = max(1, round(width / _FFN_SLICE))
    edges = [round(i * width / n) for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


def _zero_row(w: mx.array) -> mx.array:
    """``(H, K) -> (H + 1, K)``: an output projection that adds 0 to the ones column."""
    return mx.concatenate([w, mx.zeros((1, w.shape[1]), dtype=w.dtype)], axis=0)


def _ones_norm(norm: nn.LayerNorm, shift: mx.array | None) -> _Norm:
    """``norm`` for ones-column rows, its bias raised by ``shift`` (a folded residual bias)."""
    H = norm.weight.shape[0]
    dt = norm.weight.dtype
    bias = norm.bias if shift is None else norm.bias + shift
    return _Norm(
        mean_col=mx.concatenate([mx.full((H, 1), 1.0 / H, dtype=dt), mx.zeros((1, 1), dtype=dt)]),
        weight=mx.concatenate([norm.weight, mx.zeros((1,), dtype=dt)]),
        bias=mx.concatenate([bias, mx.ones((1,), dtype=dt)]),
        eps=norm.eps,
    )


def supports(model: BertModel) -> bool:
    """Whether :class:`PackedBert` can run ``model``: dense (not quantized) projections."""
    def dense(layer) -> bool:
        proj = getattr(layer.attention, "self")
        mods = (proj.query, proj.key, proj.value, layer.attention.output.dense, layer.intermediate.dense,
                layer.output.dense)
        return all(type(m) is nn.Linear and "bias" in m for m in mods)
    return all(dense(layer) for layer in model.encoder.layer)


class PackedBert:
    """``PackedBert(model)(batch) -> (T, H)`` hidden states of ``batch``'s real tokens.

    Builds its own fused copies of ``model``'s projection weights and norms once, here (later
    in-place updates to ``model`` are not seen); embeddings are shared. Attention runs in float32.

    The residual stream carries a column of ones, ``(T, H + 1)``: every bias is folded into a
    weight (see :class:`_FusedLayer`) and each residual add rides in its matmul
    (``addmm(x, ctx, W^T)``), so no Linear copies a broadcast bias and no separate add pass runs.
    """

    def __init__(self, model: BertModel) -> None:
        if not supports(model):
            raise ValueError("PackedBert needs dense projections with biases (quantized models use BertModel)")
        args = model.args
        self.model = model
        self.hidden = args.hidden_size
        self.n_heads = args.num_attention_heads
        self.head_dim = args.hidden_size // args.num_attention_heads
        scale = self.head_dim ** -0.5 * LOG2E  # scores in base-2 units for exp2_rowshift
        blocks = model.encoder.layer
        # Each layer's attention-output bias joins the residual at the norm before the layer.
        shifts = [layer.attention.output.dense.bias for layer in blocks]
        self.emb_norm = _ones_norm(model.embeddings.LayerNorm, shifts[0])
        self.layers = []
        for i, layer in enumerate(blocks):
            proj = getattr(layer.attention, "self")
            ws = [proj.query.weight * scale, proj.key.weight, proj.value.weight]
            bs = [proj.query.bias * scale, proj.key.bias, proj.value.bias]
            w = mx.concatenate([_head_cols(t, self.n_heads, 0.0) for t in ws], axis=0)
            b = mx.concatenate([_head_cols(t, self.n_heads, f) for t, f in zip(bs, (0.0, 0.0, 1.0))])
            ffn_bias = layer.output.dense.bias
            inter = _with_bias_col(layer.intermediate.dense.weight, layer.intermediate.dense.bias, ffn_bias)
            ffn = _zero_row(layer.output.dense.weight)
            cuts = _ffn_slices(inter.shape[0])
            self.layers.append(_FusedLayer(
                qkv_w=_with_bias_col(w, b, shifts[i]),
                out_w=_zero_row(layer.attention.output.dense.weight),
                out_norm=_ones_norm(layer.attention.output.LayerNorm, ffn_bias),
                inter_w=tuple(inter[c] for c in cuts),
                act=layer.intermediate.act,
                ffn_w=tuple(mx.contiguous(ffn[:, c]) for c in cuts),
                ffn_norm=_ones_norm(layer.output.LayerNorm, shifts[i + 1] if i + 1 < len(blocks) else None),
            ))
        parts = [self.emb_norm, *self.layers, *(n for f in self.layers for n in (f.out_norm, f.ffn_norm))]
        mx.eval([v for p in parts for v in vars(p).values() if isinstance(v, (mx.array, tuple))])

    def __call__(self, batch: PackedBatch, per_sequence: bool | None = None) -> mx.array:
        """Hidden states ``(T, H)``; ``per_sequence`` picks the attention layout (None: by length)."""
        for x in self.steps(batch, per_sequence):
            pass
        return x

    def steps(self, batch: PackedBatch, per_sequence: bool | None = None) -> Iterator[mx.array]:
        """The forward as a generator: the (lazy) residual stream after each layer, then ``(T, H)``.

        A caller running several batches on several streams evaluates each yield asynchronously
        (``mx.async_eval``) in turn, so every stream always has work queued (see ``MLXEncoder``).
        """
        if per_sequence is None:
            per_sequence = sum(batch.lengths) >= _EACH_FROM * len(batch.lengths)
        emb = self.model.embeddings
        x = emb.word_embeddings(batch.ids) + emb.token_type_embeddings(batch.types)
        x = x + emb.position_embeddings(batch.positions)
        x = self._norm(self.emb_norm, mx.concatenate([x, mx.ones((x.shape[0], 1), dtype=x.dtype)], axis=1))
        attend = self._attend_each if per_sequence else self._attend_batched
        for f in self.layers:
            x = self._norm(f.out_norm, mx.addmm(x, attend(f, x, batch).astype(x.dtype), f.out_w.T))
            y = x
            for w_in, w_out in zip(f.inter_w, f.ffn_w):
                y = mx.addmm(y, f.act(x @ w_in.T), w_out.T)
            x = self._norm(f.ffn_norm, y)
            yield x
        yield x[:, : self.hidden]

    def _attend_each(self, f: _FusedLayer, x: mx.array, batch: PackedBatch) -> mx.array:
        """Attention output ``(T, H)``, one sequence at a time on views of ``W x_b^T``."""
        nh, hs = self.n_heads, self.head_dim
        parts = []
        for start, n in zip(batch.offsets, batch.lengths):
            t = (f.qkv_w @ x[start : start + n].T).astype(mx.float32).reshape(3, nh, hs + 1, n)
            # (nh, n, hs) and (nh, hs, n) views with unit inner strides: matmul reads them in place.
            ev = _attention(t[0, :, :hs].swapaxes(-1, -2), t[1, :, :hs], t[2].swapaxes(-1, -2))
            parts.append(_normalised(ev.transpose(1, 0, 2)))  # (n, nh, hs + 1) -> (n, H)
        return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)

    def _attend_batched(self, f: _FusedLayer, x: mx.array, batch: PackedBatch) -> mx.array:
        """Attention output ``(T, H)`` over the whole batch, gathered into padded head-major order."""
        T = x.shape[0]
        nh, hs1 = self.n_heads, self.head_dim + 1
        B, L = len(batch.lengths), batch.width
        qkv = (x @ f.qkv_w.T).astype(mx.float32)  # (T, 3 * nh * hs1)
        heads = mx.take(qkv.reshape(-1, hs1), batch.gather, axis=0).reshape(3, B, nh, L, hs1)
        q, k, v = heads[0], heads[1], heads[2]
        if min(batch.lengths) < L:
            v = v * batch.value_keep  # padded keys then add nothing to either sum
        ev = _attention_sliced(q, k.swapaxes(-1, -2), v)
        return _normalised(mx.take(ev.reshape(-1, hs1), batch.scatter, axis=0).reshape(T, nh, hs1))

    @staticmethod
    def _norm(norm: _Norm, x: mx.array) -> mx.array:
        """LayerNorm of ``(T, H + 1)`` ones-column rows: the fused CPU kernel, else the twin below.

        Both match ``nn.LayerNorm`` to float32 rounding (tests check).
        """
        kernels = cpu_kernels_for(x)
        if kernels is not None:
            return kernels.layer_norm_rows(x, norm.weight, norm.bias, norm.eps, norm.weight.shape[0] - 1)
        return _norm_twin(norm, x)


def _norm_twin(norm: _Norm, x: mx.array) -> mx.array:
    """:meth:`PackedBert._norm` in MLX ops, two-pass, with the row means as matmuls.

    MLX's CPU reductions (and ``mx.fast.layer_norm``) run ~2x slower than a BLAS product with a
    ``1/H`` column.
    """
    d = x - x @ norm.mean_col
    return d * mx.rsqrt((d * d) @ norm.mean_col + norm.eps) * norm.weight + norm.bias


def _normalised(ev: mx.array) -> mx.array:
    """``(T, nh, hs + 1)`` unnormalised outputs with their sums last -> ``(T, nh * hs)`` context."""
    T, nh, hs1 = ev.shape
    return (ev[..., :-1] / ev[..., -1:]).reshape(T, nh * (hs1 - 1))


def _attention(q: mx.array, kt: mx.array, v: mx.array) -> mx.array:
    """``softmax(q kt) v`` unnormalised, ``(..., Lq, hs + 1)``; v's last column 1 gives the sum.

    The exact row max is subtracted, so every exponent is <= 0 and each row's sum is >= 1.
    """
    scores = q @ kt  # (..., Lq, Lk)
    return exp2_rowshift(scores) @ v


def _attention_sliced(q: mx.array, kt: mx.array, v: mx.array) -> mx.array:
    """:func:`_attention` over ``(B, nh, L, *)`` in batch slices whose scores stay in cache."""
    B, nh, L, _ = q.shape
    if B > 1 and B * nh * L * L > _CHUNK_ABOVE:
        step = max(1, _CHUNK_TARGET // (nh * L * L))
        return mx.concatenate([_attention(q[i : i + step], kt[i : i + step], v[i : i + step]) for i in range(0, B, step)])
    return _attention(q, kt, v)
