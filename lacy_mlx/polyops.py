"""Polynomial stand-ins for ``exp`` and the erf GELU, in plain MLX ops that vectorise on CPU.

MLX's CPU backend evaluates ``erf``/``exp`` one element at a time (10-25 ns each here); these use
multiplies, adds and bit shifts only, which ``mx.compile`` fuses into vectorised loops. They are
the shared numeric layer: the encoder (:mod:`lacy_mlx.encoder.fastmath`), the training loss
(:mod:`lacy_mlx.train.objectives`) and the compiled CPU kernels' self-check
(``kernels/cpu_build.py``) all import them from here, and none of those import each other for it.

* :func:`gelu_erf_poly`: erf from Abramowitz & Stegun 7.1.28 (|erf error| <= 3e-7), ~20x faster.
* :func:`exp2_nonpos`: ``2^y`` for ``y <= 0``: a degree-5 polynomial of the fraction and an
  exponent built from bits (relative error < 3e-7), ~4x faster than ``mx.exp``; :func:`exp_nonpos`
  is its ``exp``.
"""
from __future__ import annotations

import math

import mlx.core as mx

# A&S 7.1.28: erf(a) = 1 - (1 + a1 a + ... + a6 a^6)^-16 for a >= 0.
_A = (0.0705230784, 0.0422820123, 0.0092705272, 0.0001520143, 0.0002765672, 0.0000430638)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def gelu_erf_poly(x: mx.array) -> mx.array:
    """``x * Phi(x)`` with erf from a rational form: mul/add/div only, |error| <= 2e-7 * |x|."""
    return gelu_finish(x, gelu_base(x))


# The A&S coefficients rescaled to u = |x| (erf's argument is u / sqrt 2).
_B = tuple(c * _INV_SQRT2 ** (i + 1) for i, c in enumerate(_A))


def gelu_base(x: mx.array) -> mx.array:
    """``1 + b1 u + ... + b6 u^6`` at ``u = |x|``, in Estrin form (a shallow graph fuses whole).

    The first half of :func:`gelu_erf_poly` (MLX fuses at most 11 ops deep: callers compile the halves apart)."""
    u = mx.abs(x)
    u2 = u * u
    return ((1 + _B[0] * u) + u2 * (_B[1] + _B[2] * u)) + (u2 * u2) * ((_B[3] + _B[4] * u) + u2 * _B[5])


def gelu_finish(x: mx.array, p: mx.array) -> mx.array:
    """``x Phi(x) = (x + |x| erf(|x| / sqrt 2)) / 2`` with ``erf = 1 - p^-16``: no sign select."""
    p = p * p
    p = p * p
    p = p * p
    p = p * p  # p ** 16 by squaring; huge |x| gives inf and erf -> exactly 1
    u = mx.abs(x)
    return 0.5 * ((x + u) - u / p)



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



def exp_nonpos(x: mx.array) -> mx.array:
    """``exp(x)`` for float32 ``x <= 0``; values below -87 (and -inf) give 2^-126, not 0.

    :func:`exp2_nonpos` of ``x * LOG2E``: relative error ~1e-6 at ``x = -20`` (the product's rounding).
    """
    return exp2_nonpos(x * LOG2E)
