"""The fused CUDA gate (mx.fast.cuda_kernel) against the reference ops, on an NVIDIA GPU."""
from __future__ import annotations

import mlx.core as mx
import pytest

from kernel_parity import ParitySuite
from lacy_mlx.kernels.dispatch import CudaGate, fused_gate_for_device

HAS_CUDA = bool(getattr(mx, "cuda", None) and mx.cuda.is_available())
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not HAS_CUDA, reason="needs MLX's CUDA backend and an NVIDIA GPU")]


class TestCudaGate(ParitySuite):
    make_gate = CudaGate


def test_dispatcher_picks_cuda():
    assert isinstance(fused_gate_for_device(), CudaGate)
