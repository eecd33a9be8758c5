"""GELU and attention for the encoder that stay fast on MLX's CPU backend.

MLX's CPU backend evaluates ``erf``/``exp`` one element at a time (10-25 ns each here), so a
MiniLM layer spent more time in its exact GELU and its attention softmax than in its matmuls.
Both run here on the polynomial twins of :mod:`lacy_mlx.polyops` (multiplies, adds and bit
shifts, which ``mx.compile`` fuses into vectorised loops; its fused graphs hold at most 11 ops
deep, hence the splits):

* :func:`gelu`: the erf GELU of :func:`~lacy_mlx.polyops.gelu_erf_poly` (~20x faster than ``erf``).
* :func:`exp2_rowshift`: a softmax numerator, ``2^(x - row max)``: the compiled CPU kernel of
  ``lacy_mlx.kernels.cpu_build`` when it is built (MLX has no CPU custom-kernel API), else the above.
* :func:`attention_cpu`: softmax attention on top of it, normalised after the value product.

:func:`gelu` and :func:`attention` dispatch on the default device (GPUs keep ``nn.gelu`` and
``mx.fast.scaled_dot_product_attention``); tests check each twin against the exact form.
"""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from lacy_mlx.kernels.cpu_build import cpu_kernels_for
from lacy_mlx.polyops import LOG2E, exp2_nonpos, gelu_base, gelu_finish

# Shape-specialised on CPU: a shapeless compile broadcasts every constant inside the fused
# kernel, which makes MLX emit its strided (scalar) loop, 2-4x slower. Inputs are flattened so
# one trace (~1 ms) serves every shape with the same element count; two functions because a
# fused MLX kernel holds at most 11 ops deep and a split it picks itself may be strided.
_gelu_base_compiled = mx.compile(gelu_base)
_gelu_finish_compiled = mx.compile(gelu_finish)
_gelu_exact_compiled = mx.compile(nn.gelu, shapeless=True)


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU as Hugging Face's ``"gelu"``: fused polynomial on CPU, ``nn.gelu`` elsewhere.

    On CPU in float32 the compiled kernel of ``lacy_mlx.kernels.cpu_build`` (one pass) when it is
    built, else the two compiled MLX kernels below; both compute the same polynomial.
    """
    kernels = cpu_kernels_for(x)
    if kernels is not None:
        return kernels.gelu_erf(x)
    if mx.default_device() == mx.cpu:
        flat = x.reshape(-1)
        return _gelu_finish_compiled(flat, _gelu_base_compiled(flat)).reshape(x.shape)
    return _gelu_exact_compiled(x)


def exp2_rowshift(scores: mx.array) -> mx.array:
    """``2^(scores - max)`` over the last axis of float32 ``scores``: a softmax's numerator.

    On CPU the fused kernel of ``lacy_mlx.kernels.cpu_build`` (two passes over each row while in
    cache, 8-lane vectors: ~5x faster than the twin here) when it is built; otherwise, and on
    GPUs, :func:`exp2_nonpos` after ``mx.max``. Both give the same values (relative error < 3e-7).
    """
    kernels = cpu_kernels_for(scores)
    if kernels is not None:
        return kernels.exp2_rowshift(scores)
    return exp2_nonpos(scores - mx.max(scores, axis=-1, keepdims=True))


# Score elements (B * nh * L * L) above which attention runs in slices of the batch: each
# slice's scores then stay in cache across the softmax passes (2x faster at L = 256 here).
_CHUNK_ABOVE = 1 << 20
_CHUNK_TARGET = 1 << 18


def attention_cpu(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None) -> mx.array:
    """Softmax attention ``(B, nh, L, hs)`` with a boolean key ``mask`` of shape (B, 1, 1, L) or None."""
    B, nh, L, _ = q.shape
    if B > 1 and B * nh * L * L > _CHUNK_ABOVE and (mask is None or mask.shape[0] == B):
        step = max(1, _CHUNK_TARGET // (nh * L * L))
        parts = [
            _attention_block(q[i : i + step], k[i : i + step], v[i : i + step], scale,
                             None if mask is None else mask[i : i + step])
            for i in range(0, B, step)
        ]
        return mx.concatenate(parts, axis=0)
    return _attention_block(q, k, v, scale, mask)


def _attention_block(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None) -> mx.array:
    # The key mask rides in the score matmul as an extra column (q: 1, k: 0 or -1e9) and the
    # softmax denominator in the value matmul (v: a column of ones): two fewer (L, L) passes.
    dtype = q.dtype
    B, nh, L, hs = q.shape
    q, k, v = (t.astype(mx.float32) for t in (q, k, v))
    q = q * (scale * LOG2E)  # scores in base-2 units for exp2_nonpos
    if mask is not None:
        bias = mx.where(mask.reshape(mask.shape[0], 1, -1, 1), 0.0, -1e9).astype(mx.float32)  # (B, 1, L, 1)
        q = mx.concatenate([q, mx.ones((B, nh, L, 1), mx.float32)], axis=-1)
        k = mx.concatenate([k, mx.broadcast_to(bias, (B, nh, L, 1))], axis=-1)
    scores = q @ k.swapaxes(-1, -2)  # (B, nh, L, L)
    e = exp2_rowshift(scores)
    ev = e @ mx.concatenate([v, mx.ones((B, nh, L, 1), mx.float32)], axis=-1)  # (B, nh, L, hs + 1)
    return (ev[..., :hs] / ev[..., hs:]).astype(dtype)


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None) -> mx.array:
    """Scaled dot-product attention: :func:`attention_cpu` on CPU, MLX's fused kernel elsewhere."""
    if mx.default_device() == mx.cpu:
        return attention_cpu(q, k, v, scale, mask)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
