"""The reference gate (plain MLX ops) against the contract in float64 numpy, on any device."""
from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gate_cases import as_numpy, edge_rows, numpy_decide, numpy_gate
from lacy_mlx.gate import MODES, gate_params, gate_stats_reference
from lacy_mlx.kernels import dispatch
from lacy_mlx.kernels.dispatch import gate_stats

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
# Small integers make ties; the specials are the contract's edge cases.
LOGIT = st.one_of(
    st.floats(-40.0, 40.0, width=32),
    st.integers(-3, 3).map(float),
    st.sampled_from([-math.inf, math.nan, math.inf, 1e30, -1e30, 3e38, -3e38]),
)


@st.composite
def gate_inputs(draw):
    rows = draw(st.integers(1, 4))
    vocab = draw(st.integers(1, 64))
    x = draw(hnp.arrays(np.float32, (rows, vocab), elements=LOGIT))
    if draw(st.booleans()):
        x[draw(st.integers(0, rows - 1))] = draw(st.sampled_from([-math.inf, math.nan]))
    call_id = draw(st.sampled_from([-1, 0, vocab - 1, vocab, draw(st.integers(0, vocab - 1))]))
    mode = draw(st.sampled_from(sorted(MODES)))
    ent_t = draw(st.floats(-0.5, 5.0, width=32))
    call_t = draw(st.floats(-0.125, 1.0, width=32))
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    return x, call_id, mode, ent_t, call_t, dtype


def _check(x32: np.ndarray, call_id: int, mode: str, ent_t: float, call_t: float, dtype: str) -> None:
    logits = mx.array(x32).astype(DTYPES[dtype])
    seen = np.array(logits.astype(mx.float32))  # what the gate sees after the cast
    got = as_numpy(gate_stats_reference(logits, call_id, gate_params(mode, ent_t, call_t)))
    want = numpy_gate(seen, call_id)
    np.testing.assert_array_equal(got["token"], want["token"])
    for key in ("entropy", "p_call", "p_top"):
        assert np.all(np.isfinite(got[key])), key
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)
    # the decision follows the rule on the returned statistics (no flakiness at the threshold)
    fire = numpy_decide(got["entropy"], got["p_call"], want["valid"], MODES[mode], ent_t, call_t)
    np.testing.assert_array_equal(got["decision"], fire)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gate_inputs())
def test_reference_matches_float64(case):
    _check(*case)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (8, 1000), (2, 32000)])
def test_reference_edge_rows(dtype, shape):
    rng = np.random.default_rng(shape[0] * 7919 + shape[1])
    x = edge_rows(rng, *shape)
    for call_id in (-1, 0, shape[1] - 1):
        _check(x, call_id, "either", 1.5, 0.05, dtype)


def test_all_masked_row_never_fires():
    x = mx.array([[-math.inf, math.nan, -math.inf]], dtype=mx.float32)
    stats = gate_stats_reference(x, 1, gate_params("either", -1.0, -1.0))
    assert stats.entropy.item() == 0.0 and stats.p_call.item() == 0.0 and stats.p_top.item() == 0.0
    assert stats.token.item() == 0 and stats.decision.item() is False


def test_one_dim_logits_give_one_row():
    x = mx.array([0.0, 2.0, 2.0, -1.0])
    stats = gate_stats_reference(x, 2, gate_params("call", 0.0, 0.1))
    assert stats.token.shape == (1,) and stats.token.item() == 1  # tie -> lowest index
    assert stats.decision.item() is True


def test_reference_forced_by_environment(monkeypatch):
    monkeypatch.setattr(dispatch, "_FUSED", [])
    monkeypatch.setenv("LACY_GATE_REFERENCE", "1")
    assert dispatch._fused_impl() is None
    x = mx.array(edge_rows(np.random.default_rng(3), 3, 50))
    got = as_numpy(gate_stats(x, 4, gate_params("entropy", 1.0, 0.5)))
    want = as_numpy(gate_stats_reference(x, 4, gate_params("entropy", 1.0, 0.5)))
    for key in got:
        np.testing.assert_array_equal(got[key], want[key])
