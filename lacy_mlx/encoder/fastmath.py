"""GELU and attention for the encoder that stay fast on MLX's CPU backend.

MLX's CPU backend evaluates ``erf``/``exp`` one element at a time (10-25 ns each here), so a
MiniLM layer spent more time in its exact GELU and its attention softmax than in its matmuls.
The twins here use multiplies, adds and bit shifts only, which ``mx.compile`` fuses into
vectorised loops (its fused graphs hold at most 11 ops deep, hence the splits):

* :func:`gelu_erf_poly`: erf from Abramowitz & Stegun 7.1.28 (|erf error| <= 3e-7), ~20x faster.
* :func:`exp2_nonpos`: ``2^y`` for ``y <= 0``: a degree-5 polynomial of the fraction and an
  exponent built from bits (relative error < 3e-7), ~4x faster than ``mx.exp``; :func:`exp_nonpos`
  is its ``exp``.
* :func:`exp2_rowshift`: a softmax numerator, ``2^(x - row max)``: the compiled CPU kernel of
  ``lacy_mlx.kernels.cpu_build`` when it is built (MLX has no CPU custom-kernel API), else the above.
* :func:`attention_cpu`: softmax attention on top of it, normalised after the value product.

:func:`gelu` and :func:`attention` dispatch on the default device (GPUs keep ``nn.gelu`` and
``mx.fast.scaled_dot_product_attention``); tests check each twin against the exact form.
"""
from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from lacy_mlx.kernels.cpu_build import cpu_kernels_for

# A&S 7.1.28: erf(a) = 1 - (1 + a1 a + ... + a6 a^6)^-16 for a >= 0.
_A = (0.0705230784, 0.0422820123, 0.0092705272, 0.0001520143, 0.0002765672, 0.0000430638)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def gelu_erf_poly(x: mx.array) -> mx.array:
    """``x * Phi(x)`` with erf from a rational form: mul/add/div only, |error| <= 2e-7 * |x|."""
    return _gelu_finish(x, _gelu_base(x))


# The A&S coefficients rescaled to u = |x| (erf's argument is u / sqrt 2).
_B = tuple(c * _INV_SQRT2 ** (i + 1) for i, c in enumerate(_A))


def _gelu_base(x: mx.array) -> mx.array:
    """``1 + b1 u + ... + b6 u^6`` at ``u = |x|``, in Estrin form (a shallow graph fuses whole)."""
    u = mx.abs(x)
    u2 = u * u
    return ((1 + _B[0] * u) + u2 * (_B[1] + _B[2] * u)) + (u2 * u2) * ((_B[3] + _B[4] * u) + u2 * _B[5])


def _gelu_finish(x: mx.array, p: mx.array) -> mx.array:
    """``x Phi(x) = (x + |x| erf(|x| / sqrt 2)) / 2`` with ``erf = 1 - p^-16``: no sign select."""
    p = p * p
    p = p * p
    p = p * p
    p = p * p  # p ** 16 by squaring; huge |x| gives inf and erf -> exactly 1
    u = mx.abs(x)
    return 0.5 * ((x + u) - u / p)


# Shape-specialised on CPU: a shapeless compile broadcasts every constant inside the fused
# kernel, which makes MLX emit its strided (scalar) loop, 2-4x slower. Inputs are flattened so
# one trace (~1 ms) serves every shape with the same element count; two functions because a
# fused MLX kernel holds at most 11 ops deep and a split it picks itself may be strided.
_gelu_base_compiled = mx.compile(_gelu_base)
_gelu_finish_compiled = mx.compile(_gelu_finish)
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


LOG2E = 1.0 / math.log(2.0)  # exp(x) = 2^(x * LOG2E): callers fold it into a scale they apply anyway
_ROUND = 12582912.0  # 1.5 * 2^23: (y + _ROUND) - _ROUND rounds a float32 to an integer
# 2^f on |f| <= 1/2, degree 5, fitted for relative error (7.7e-8 max; Taylor's would be 2.4e-6).
_EXP2_C = (1.000000071029699, 0.6931469491610645, 0.24022121753561687, 0.05550742616002223,
           0.009675459745521559, 0.0013266970386470525)


def _exp2_bits(y: mx.array) -> mx.array:
    """The int32 bits of ``2^k``, ``k = round(y)`` (``y`` already clamped to [-126, 127))."""
    k = (y + _ROUND) - _ROUND
    return mx.left_shift((k + 127).astype(mx.int32), 23)


def _exp2_value(y: mx.array, scale: mx.array) -> mx.array:
    """``2^(y - k) * scale`` with 2^f as an Estrin-form polynomial (depth 9: one fused kernel)."""
    f = y - ((y + _ROUND) - _ROUND)  # exact: y and its rounded k are close
    c = _EXP2_C
    f2 = f * f
    lo = (c[0] + c[1] * f) + f2 * (c[2] + c[3] * f)
    return (lo + (f2 * f2) * (c[4] + c[5] * f)) * scale


# Shape-specialised, as the GELU's. Two single-output functions because MLX fuses a compiled
# graph per output (an intermediate two outputs share is written out) and cannot fuse the view
# from int32 bits to float32. Neither holds a min/max or select: those make MLX's generated C++
# loop scalar, so the clamp runs before, as MLX's own (vectorised) maximum.
_exp2_bits_compiled = mx.compile(_exp2_bits)
_exp2_value_compiled = mx.compile(_exp2_value)


def exp2_nonpos(y: mx.array) -> mx.array:
    """``2^y`` for float32 ``y <= 0`` (any ``y < 127``); below -126 (and -inf) it gives 2^-126, not 0.

    Relative error < 3e-7 (float32 rounding included). Base 2 needs no range-reduction constant,
    so fold ``LOG2E`` into a scale the caller applies anyway (as attention does) rather than call
    :func:`exp_nonpos`.
    Three vectorised passes (clamp, exponent bits, polynomial); pass a contiguous ``y``.
    """
    flat = mx.maximum(y.reshape(-1), -126.0)
    bits = _exp2_bits_compiled(flat)
    return _exp2_value_compiled(flat, mx.view(bits, mx.float32)).reshape(y.shape)


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


def exp_nonpos(x: mx.array) -> mx.array:
    """``exp(x)`` for float32 ``x <= 0``; values below -87 (and -inf) give 2^-126, not 0.

    :func:`exp2_nonpos` of ``x * LOG2E``: relative error ~1e-6 at ``x = -20`` (the product's rounding).
    """
    return exp2_nonpos(x * LOG2E)


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
