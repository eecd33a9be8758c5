"""What the CPU kernel tests share: a relative error and the runtime Decoder's greedy tokens."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from lacy_mlx.runtime.decoder import Decoder


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
