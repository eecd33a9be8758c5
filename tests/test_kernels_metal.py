"""The fused Metal gate (mx.fast.metal_kernel) against the reference ops, on an Apple GPU."""
from __future__ import annotations

import mlx.core as mx
import pytest

from kernel_parity import ParitySuite
from lacy_mlx.kernels.dispatch import MetalGate, fused_gate_for_device

pytestmark = pytest.mark.skipif(
    not mx.metal.is_available(), reason="Metal kernels run only on Apple GPUs (macOS)"
)


class TestMetalGate(ParitySuite):
    make_gate = MetalGate


def test_dispatcher_picks_metal():
    assert isinstance(fused_gate_for_device(), MetalGate)
