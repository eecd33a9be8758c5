"""GELU and attention for the encoder that stay fast on MLX's CPU backend.

MLX's CPU backend evaluates ``erf``/``exp`` one element at a time (10-25 ns each here), so a
MiniLM layer spent more time in its exact GELU and its attention softmax than in its matmuls.
The twins here use multiplies, adds and bit shifts only, which ``mx.compile`` fuses into
vectorised loops (its fused graphs hold at most 11 ops deep, hence the splits):

* :func:`gelu_erf_poly`: erf from Abramowitz & Stegun 7.1.28 (|erf error| <= 3e-7), ~20x faster.
* :func:`exp_nonpos`: ``exp(x)`` for ``x <= 0`` by Cody-Waite range reduction, a degree-7
  polynomial and an exponent built from bits (relative error ~1e-7 for x > -20), ~3x faster.
* :func:`attention_cpu`: softmax attention on top of it, normalised after the value product.

:func:`gelu` and :func:`attention` dispatch on the default device (GPUs keep ``nn.gelu`` and
``mx.fast.scaled_dot_product_attention``); tests check each twin against the exact form.
"""
from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

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
    """Exact (erf) GELU as Hugging Face's ``"gelu"``: fused polynomial on CPU, ``nn.gelu`` elsewhere."""
    if mx.default_device() == mx.cpu:
        flat = x.reshape(-1)
        return _gelu_finish_compiled(flat, _gelu_base_compiled(flat)).reshape(x.shape)
    return _gelu_exact_compiled(x)


_LOG2E = 1.0 / math.log(2.0)
_LN2_HI = 0.693145751953125  # ln 2 split so k * _LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.428606765330187e-06
_ROUND = 12582912.0  # 1.5 * 2^23: (x + _ROUND) - _ROUND rounds a float32 to an integer
_EXP_C = tuple(1.0 / math.factorial(i) for i in range(8))


def _exp_split(x: mx.array) -> tuple[mx.array, mx.array]:
    """``x = k ln2 + r`` with integer k in [-126, 0] and |r| <= ln2 / 2; returns r and 2^k's bits."""
    x = mx.maximum(x, -87.0)  # below this exp underflows float32; -inf lands here too
    k = (x * _LOG2E + _ROUND) - _ROUND
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return r, mx.left_shift((k + 127).astype(mx.int32), 23)


def _exp_poly(r: mx.array, scale: mx.array) -> mx.array:
    """``exp(r) * scale`` with exp's Taylor series to degree 7 in Estrin form (shallow graph)."""
    c = _EXP_C
    r2 = r * r
    lo = (c[0] + c[1] * r) + r2 * (c[2] + c[3] * r)
    hi = (c[4] + c[5] * r) + r2 * (c[6] + c[7] * r)
    return (lo + (r2 * r2) * hi) * scale


_exp_split_compiled = mx.compile(_exp_split)  # shape-specialised, as the GELU's
_exp_poly_compiled = mx.compile(_exp_poly)


def exp_nonpos(x: mx.array) -> mx.array:
    """``exp(x)`` for float32 ``x <= 0``; values below -87 (and -inf) give 2^-126, not 0.

    Pass a contiguous ``x`` (no broadcasting): MLX vectorises only its contiguous fused kernels.
    """
    r, bits = _exp_split_compiled(x.reshape(-1))
    return _exp_poly_compiled(r, mx.view(bits, mx.float32)).reshape(x.shape)


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
    q = q * scale
    if mask is not None:
        bias = mx.where(mask.reshape(mask.shape[0], 1, -1, 1), 0.0, -1e9).astype(mx.float32)  # (B, 1, L, 1)
        q = mx.concatenate([q, mx.ones((B, nh, L, 1), mx.float32)], axis=-1)
        k = mx.concatenate([k, mx.broadcast_to(bias, (B, nh, L, 1))], axis=-1)
    scores = q @ k.swapaxes(-1, -2)  # (B, nh, L, L)
    e = exp_nonpos(scores - mx.max(scores, axis=-1, keepdims=True))
    ev = e @ mx.concatenate([v, mx.ones((B, nh, L, 1), mx.float32)], axis=-1)  # (B, nh, L, hs + 1)
    return (ev[..., :hs] / ev[..., hs:]).astype(dtype)


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None) -> mx.array:
    """Scaled dot-product attention: :func:`attention_cpu` on CPU, MLX's fused kernel elsewhere."""
    if mx.default_device() == mx.cpu:
        return attention_cpu(q, k, v, scale, mask)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
