"""The fused-polynomial GELU the encoder uses on CPU agrees with MLX's exact erf GELU."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from lacy_mlx.encoder.fastmath import gelu
from lacy_mlx.polyops import gelu_erf_poly


def _inputs() -> mx.array:
    rng = np.random.default_rng(0)
    grid = np.linspace(-12.0, 12.0, 4001)
    return mx.array(np.concatenate([grid, rng.normal(0, 3, 20000), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32))


def test_poly_matches_exact_gelu() -> None:
    x = _inputs()
    exact = np.array(nn.gelu(x))
    np.testing.assert_allclose(np.array(gelu_erf_poly(x)), exact, rtol=0, atol=3e-6)
    np.testing.assert_allclose(np.array(gelu(x)), exact, rtol=0, atol=3e-6)  # compiled dispatcher


def test_dispatcher_keeps_shape_and_dtype() -> None:
    for dtype in (mx.float32, mx.float16, mx.bfloat16):
        x = mx.random.normal((3, 5, 7), key=mx.random.key(1)).astype(dtype)
        out = gelu(x)
        assert out.shape == x.shape and out.dtype == dtype
        ref = np.array(nn.gelu(x.astype(mx.float32)))
        np.testing.assert_allclose(np.array(out.astype(mx.float32)), ref, atol=3e-2)


def test_extreme_inputs_saturate() -> None:
    out = np.array(gelu(mx.array([-1e4, -40.0, 40.0, 1e4], dtype=mx.float32)))
    np.testing.assert_array_equal(out, [0.0, 0.0, 40.0, 1e4])


def test_exp2_nonpos_relative_error() -> None:
    from lacy_mlx.polyops import exp2_nonpos

    y = np.concatenate([np.linspace(-126.0, 0.0, 40001), -np.abs(np.random.default_rng(1).normal(0, 8, 20000))])
    got = np.array(exp2_nonpos(mx.array(y.astype(np.float32))), dtype=np.float64)
    ref = np.exp2(y.astype(np.float32).astype(np.float64))
    assert np.max(np.abs(got - ref) / ref) < 4e-7  # the fit (7.7e-8) plus float32 rounding
    tail = np.array(exp2_nonpos(mx.array([-126.5, -200.0, -1e30, -np.inf], dtype=mx.float32)))
    np.testing.assert_allclose(tail, 2.0 ** -126, rtol=4e-7)  # clamped, never NaN or garbage


def test_exp_nonpos_relative_error() -> None:
    from lacy_mlx.polyops import exp_nonpos

    x = np.concatenate([np.linspace(-20.0, 0.0, 20001), -np.abs(np.random.default_rng(1).normal(0, 5, 20000))])
    got = np.array(exp_nonpos(mx.array(x.astype(np.float32))), dtype=np.float64)
    ref = np.exp(x.astype(np.float32).astype(np.float64))
    assert np.max(np.abs(got - ref) / ref) < 2e-6  # x * log2(e) rounds: ~1e-6 at x = -20
    tail = np.array(exp_nonpos(mx.array([-87.5, -200.0, -np.inf], dtype=mx.float32)))
    assert np.all((tail >= 0) & (tail < 1e-37))


@pytest.mark.parametrize("batch,length", [(3, 7), (9, 200)])  # the second runs in batch slices
def test_attention_cpu_matches_sdpa(batch: int, length: int) -> None:
    from lacy_mlx.encoder.fastmath import attention_cpu

    key = mx.random.key(2)
    q, k, v = (mx.random.normal((batch, 4, length, 8), key=kk) * 2 for kk in mx.random.split(key, 3))
    lengths = np.random.default_rng(3).integers(1, length + 1, size=batch)
    mask = mx.array(np.arange(length)[None, :] < lengths[:, None])[:, None, None, :]
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35, mask=mask)
    np.testing.assert_allclose(np.array(attention_cpu(q, k, v, 0.35, mask)), np.array(ref), atol=2e-5)
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35)
    np.testing.assert_allclose(np.array(attention_cpu(q, k, v, 0.35, None)), np.array(ref), atol=2e-5)
