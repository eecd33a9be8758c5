"""Quantized linear layers that run fast on MLX's CPU backend.

MLX 0.32's CPU ``mx.quantized_matmul`` is ~10x slower than a float32 matmul (it does not
vectorise, nor batch rows), which made the 4-bit model slower than the float32 one. On the CPU,
:func:`accelerate` swaps a loaded model's affine 4/8-bit ``QuantizedLinear`` layers and its
quantized embedding's ``as_linear`` (the tied head) onto the kernels of
``kernels/cpu_quant.cpp``: a vectorised matrix-vector product over the packed weights for decode
and small batches, and for prefill (``PREFILL_ROWS`` rows or more) a threaded dequantize followed
by MLX's float32 matmul (OpenBLAS), whose weights exist only during that call. Scales and biases
may be float32 or float16. Anything else (a GPU, other bit widths, kernels unavailable) runs
MLX's own op, the twin the kernels are checked against.
"""
from __future__ import annotations

import os

import mlx.core as mx
import mlx.nn as nn

from lacy_mlx.kernels.cpu_build import quant_kernels
from lacy_mlx.platform import usable_cores

PREFILL_ROWS = 32  # from this many rows of x on, dequantize + BLAS beats the matrix-vector kernel
_SCALE_DTYPES = (mx.float32, mx.float16)
_THREADS_SET = False


def _usable(x: mx.array, scales: mx.array, bits: int, group_size: int, mode: str):
    """The kernel module when this call can take it, else None."""
    if (x.dtype != mx.float32 or scales.dtype not in _SCALE_DTYPES or mode != "affine" or bits not in (4, 8)
            or group_size not in (32, 64, 128) or mx.default_device() != mx.cpu):
        return None
    return quant_kernels()


def quantized_matmul(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array | None, *,
                     group_size: int, bits: int, mode: str = "affine") -> mx.array:
    """``x @ dequantize(w).T``: ``mx.quantized_matmul(..., transpose=True)`` with the CPU kernels
    where they apply (results equal within float32 rounding)."""
    kernels = _usable(x, scales, bits, group_size, mode) if biases is not None else None
    if kernels is None:
        return mx.quantized_matmul(x, w, scales=scales, biases=biases, transpose=True, group_size=group_size,
                                   bits=bits, mode=mode)
    _default_threads(kernels)
    if x.size // max(x.shape[-1], 1) >= PREFILL_ROWS:
        return x @ kernels.dequantize(w, scales, biases, group_size, bits).T
    return kernels.quantized_matmul(x, w, scales, biases, group_size, bits)


def set_threads(n: int) -> bool:
    """Threads the quantized kernels split output rows over; False when there are no kernels.
    (The prefill matmul's threads are BLAS's: :func:`lacy_mlx.platform.blas_threads`.)"""
    global _THREADS_SET
    kernels = quant_kernels()
    if kernels is None:
        return False
    kernels.set_threads(max(1, int(n)))
    _THREADS_SET = True
    return True


def _default_threads(kernels) -> None:
    global _THREADS_SET
    if not _THREADS_SET:  # as BLAS does: every usable core unless told (LACY_MLX_THREADS)
        kernels.set_threads(max(1, int(os.environ.get("LACY_MLX_THREADS", 0)) or usable_cores()))
        _THREADS_SET = True


class CpuQuantizedLinear(nn.QuantizedLinear):
    """``nn.QuantizedLinear`` whose product goes through :func:`quantized_matmul`."""

    def __call__(self, x: mx.array) -> mx.array:
        y = quantized_matmul(x, self["weight"], self["scales"], self.get("biases"), group_size=self.group_size,
                             bits=self.bits, mode=self.mode)
        return y + self["bias"] if "bias" in self else y


class CpuQuantizedEmbedding(nn.QuantizedEmbedding):
    """``nn.QuantizedEmbedding`` whose ``as_linear`` (a tied output head) goes through :func:`quantized_matmul`,
    and whose lookup stays float32 when :func:`accelerate` stored its scales as float16."""

    def __call__(self, x: mx.array) -> mx.array:
        if not getattr(self, "_halved", False):
            return super().__call__(x)
        return mx.dequantize(self["weight"][x], scales=self["scales"][x].astype(mx.float32),
                             biases=self["biases"][x].astype(mx.float32), group_size=self.group_size,
                             bits=self.bits, mode=self.mode)

    def as_linear(self, x: mx.array) -> mx.array:
        return quantized_matmul(x, self["weight"], self["scales"], self.get("biases"), group_size=self.group_size,
                                bits=self.bits, mode=self.mode)


_SWAPS = ((nn.QuantizedLinear, CpuQuantizedLinear), (nn.QuantizedEmbedding, CpuQuantizedEmbedding))


def accelerate(model: nn.Module) -> int:
    """Switch ``model``'s quantized layers, in place, to the CPU kernels; the number switched.

    Does nothing (0) off the CPU or without the kernels (``LACY_MLX_CPU_KERNELS=0``, no compiler).
    The class changes, and float32 scales and biases that float16 holds exactly (a GGUF's) are stored
    as float16 (the same values, 16% fewer bytes read per decode token); it is idempotent; layers the
    kernels cannot take (other widths, modes) are left as they are, and a switched layer given
    non-float32 input falls back to ``mx.quantized_matmul`` per call.
    """
    if mx.default_device() != mx.cpu or not isinstance(model, nn.Module) or quant_kernels() is None:
        return 0  # a wrapper that only calls a model (a test double, an app's proxy) is left alone
    n = 0
    for _, module in model.named_modules():
        for plain, fast in _SWAPS:
            if type(module) is plain and _fits(module):
                module.__class__ = fast
                _halve_scales(module)
                n += 1
    return n


def _fits(module: nn.Module) -> bool:
    """Whether the kernels take this layer's weights (else it keeps MLX's op, without a per-call check)."""
    return (getattr(module, "mode", "affine") == "affine" and module.bits in (4, 8)
            and module.group_size in (32, 64, 128) and module["scales"].dtype in _SCALE_DTYPES
            and module.get("biases") is not None and module["biases"].dtype == module["scales"].dtype)


def _halve_scales(module: nn.Module) -> bool:
    """Store a layer's float32 scales and biases as float16 when that is exact (a GGUF's are float16
    in the file): a decode step reads 2 bytes instead of 4 per 32 weights, the values unchanged."""
    s, b = module["scales"], module["biases"]
    if s.dtype != mx.float32:
        return False
    s16, b16 = s.astype(mx.float16), b.astype(mx.float16)
    if not (mx.array_equal(s16.astype(mx.float32), s) and mx.array_equal(b16.astype(mx.float32), b)):
        return False
    module.scales, module.biases = s16, b16
    module._halved = True  # an embedding's lookup casts back: the model's activations stay float32
    return True
