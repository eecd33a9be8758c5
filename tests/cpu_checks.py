"""What the CPU kernel tests share: the Linux-only mark, a loaded-kernels check, a relative error
and the runtime Decoder's greedy tokens."""
from __future__ import annotations

import platform
from types import ModuleType

import mlx.core as mx
import mlx.nn as nn
import pytest

from lacy_mlx.runtime.decoder import Decoder


LINUX_ONLY = pytest.mark.skipif(platform.system() != "Linux", reason="the CPU kernels are built and used on Linux only")


def loaded(module: ModuleType | None, what: str) -> ModuleType:
    """``module``, failing the test (not skipping it) when ``what`` did not build, load or pass its check."""
    assert module is not None, f"the {what} failed to build, load or check: see the warning"
    return module


def rel_error(got: mx.array, want: mx.array) -> float:
    """max |got - want| over max |want|."""
    return float(mx.max(mx.abs(got - want)) / mx.max(mx.abs(want)))


def decoder_tokens(model: nn.Module, prompt: list[int], n: int) -> list[int]:
    """``n`` greedy tokens after ``prompt`` through the runtime's Decoder (gate off)."""
    dec = Decoder(model)
    step = dec.feed(prompt, None)
    out = []
    for _ in range(n):
        out.append(step.read()[0])
        step = dec.advance(step, None, call_on_fire=False)
    return out
