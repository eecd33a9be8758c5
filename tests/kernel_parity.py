"""Parity of a fused gate kernel with the reference ops; subclassed per backend by the test files."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate_cases import as_numpy, check_parity, edge_rows, numpy_gate
from lacy_mlx.gate import gate_params
from lacy_mlx.kernels.dispatch import WORKSPACE_RING

DTYPES = [mx.float32, mx.float16, mx.bfloat16]
SHAPES = [(1, 1), (1, 7), (1, 1000), (1, 4099), (1, 32000), (1, 151936), (3, 5001), (8, 49152),
          (64, 32000), (600, 1000)]


def _logits(shape, dtype, seed: int = 0) -> mx.array:
    return mx.array(edge_rows(np.random.default_rng(seed), *shape)).astype(dtype)


class ParitySuite:
    """Set ``make_gate`` to a zero-argument factory of the fused gate under test (the ``gate`` fixture builds it)."""

    make_gate = None

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    def test_edge_rows(self, gate, shape, dtype):
        check_parity(gate, _logits(shape, dtype, seed=shape[1]), call_id=shape[1] // 2)

    @pytest.mark.parametrize("mode", ["off", "call", "entropy", "either"])
    @pytest.mark.parametrize("call_id", [-1, 0, 4098, 4099])
    def test_call_ids_and_modes(self, gate, mode, call_id):
        check_parity(gate, _logits((2, 4099), mx.bfloat16, seed=5), call_id, mode, 0.5, 1e-4)

    def test_one_dim_and_unaligned_rows(self, gate):
        row = _logits((1, 40001), mx.float16, seed=9)[0]
        check_parity(gate, row, 7)  # (V,) -> one row
        check_parity(gate, row[3:], 7)  # contiguous, pointer not 16-byte aligned
        check_parity(gate, _logits((4, 3001), mx.float32, seed=2)[:, 1:], 0)  # strided: copied

    def test_all_masked_rows(self, gate):
        x = mx.full((3, 70000), -mx.inf, dtype=mx.bfloat16)
        stats = as_numpy(gate(x, 5, gate_params("either", -1.0, -1.0)))
        assert not stats["decision"].any() and (stats["token"] == 0).all()
        assert (stats["entropy"] == 0).all() and (stats["p_top"] == 0).all()

    @pytest.mark.parametrize("shape", [(1, 9000), (2, 151936)], ids=str)
    def test_many_calls_in_one_graph(self, gate, shape):
        """More independent calls than workspaces, evaluated together: no shared-counter races."""
        calls = WORKSPACE_RING + 40 if shape[1] < 10000 else 64
        rng = np.random.default_rng(11)
        xs = [rng.standard_normal(shape).astype(np.float32) * 4 for _ in range(calls)]
        params = gate_params("entropy", 3.0, 0.5)
        outs = [gate(mx.array(x), 3, params) for x in xs]
        mx.eval([o.entropy for o in outs] + [o.token for o in outs] + [o.p_call for o in outs])
        for x, out in zip(xs, outs):
            want = numpy_gate(x, 3)
            np.testing.assert_array_equal(np.array(out.token), want["token"])
            np.testing.assert_allclose(np.array(out.entropy), want["entropy"], rtol=2e-4, atol=2e-5)
            np.testing.assert_allclose(np.array(out.p_call), want["p_call"], rtol=2e-4, atol=1e-7)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
    @given(rows=st.integers(1, 70), vocab=st.integers(1, 70000), seed=st.integers(0, 2**16),
           dtype=st.sampled_from(DTYPES))
    def test_random_shapes(self, gate, rows, vocab, seed, dtype):
        check_parity(gate, _logits((rows, vocab), dtype, seed), call_id=seed % (vocab + 1))
