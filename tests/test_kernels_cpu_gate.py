"""The CPU gate (kernels/cpu_gate.cpp, one task per call) against the reference ops and numpy, and
the dispatcher choosing it on the CPU. float32 rows run the kernel; other dtypes take the reference
(the suite covers both), as do GPU streams."""
from __future__ import annotations

import mlx.core as mx
import pytest

from cpu_checks import LINUX_ONLY, loaded
from kernel_parity import ParitySuite
from lacy_mlx.gate import gate_params, gate_stats_reference
from lacy_mlx.kernels import cpu_build, dispatch

pytestmark = LINUX_ONLY


def _cpu_gate() -> dispatch.CpuGate:
    return loaded(dispatch._cpu_gate(), "CPU gate kernel")


class TestCpuGate(ParitySuite):
    make_gate = staticmethod(_cpu_gate)


def test_float32_rows_run_the_kernel(monkeypatch) -> None:
    gate = _cpu_gate()
    monkeypatch.setattr(dispatch, "gate_stats_reference", lambda *a: pytest.fail("took the reference ops"))
    x = mx.random.normal((2, 49152), key=mx.random.key(3)) * 3
    stats = gate(x, 7, gate_params("entropy", 3.0, 0.5))
    want = gate_stats_reference(x, 7, gate_params("entropy", 3.0, 0.5))
    assert mx.array_equal(stats.token, want.token).item()
    assert mx.allclose(stats.entropy, want.entropy, rtol=1e-4).item()  # float32 sums of 49,152 terms, another order


def test_dispatcher_picks_the_cpu_gate_and_bad_input_is_refused() -> None:
    assert isinstance(dispatch.fused_gate_for_device(), dispatch.CpuGate)
    kernels = loaded(cpu_build.cpu_kernels(), "CPU kernels")
    with pytest.raises(ValueError, match="params must be"):
        kernels.gate_stats(mx.zeros((1, 10)), 0, mx.zeros((2,)))
    with pytest.raises(ValueError, match="float32"):
        kernels.gate_stats(mx.zeros((1, 10), dtype=mx.float16), 0, mx.zeros((3,)))


def test_failed_check_warns_and_keeps_the_reference(monkeypatch) -> None:
    monkeypatch.delitem(cpu_build._loaded, "gate", raising=False)
    monkeypatch.setattr(dispatch, "_check_cpu_gate", lambda m: (_ for _ in ()).throw(ValueError("differs")))
    with pytest.warns(UserWarning, match="using the reference ops"):
        assert dispatch._cpu_gate() is None
