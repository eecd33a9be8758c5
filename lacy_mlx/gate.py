"""Gate statistics of next-token logits: entropy, p(<CALL>), top-1 probability, greedy token, decision.

This module holds the contract and the reference implementation in plain MLX ops (the kernels'
twin). The fused kernels in ``lacy_mlx.kernels`` compute the same outputs in one pass;
:func:`lacy_mlx.kernels.dispatch.gate_stats` picks one per device (``LACY_GATE_REFERENCE=1``
forces the reference).

Contract, per row of logits ``x`` (float32, float16 or bfloat16; computed in float32):

- ``-inf`` entries have probability 0 (masked vocabulary); ``0 * -inf`` never makes NaN.
- NaN entries are treated as ``-inf``: one corrupt logit does not poison the row.
- ``+inf`` entries are clamped to the largest finite float32, so they share the mass equally.
- ``entropy`` is in nats; ``p_top`` is the probability of ``token``, the greedy token (ties go
  to the lowest index, as ``mx.argmax``); ``p_call`` is the probability of ``call_id`` (0 when
  ``call_id`` is outside ``[0, V)``: the model has no <CALL>).
- A row with no usable entry (all ``-inf``/NaN) gives entropy 0, p_call 0, p_top 0, token 0 and
  decision False.
- ``params`` is a float32 array ``[mode, entropy_threshold, call_threshold]``; ``mode`` is one of
  :data:`MODES` (off 0, call 1, entropy 2, either 3). The decision is
  ``(mode in {call, either} and p_call >= call_threshold) or
  (mode in {entropy, either} and entropy >= entropy_threshold)``. Thresholds travel as an
  array so a running call budget can move them without rebuilding kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

MODES = {"off": 0, "call": 1, "entropy": 2, "either": 3}
_F32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class GateStats:
    """Per-row gate outputs, each an ``mx.array`` of shape ``(B,)``."""

    entropy: mx.array  # float32, nats
    p_call: mx.array  # float32
    p_top: mx.array  # float32
    token: mx.array  # int32 (uint32 where a kernel emits it is cast)
    decision: mx.array  # bool


def gate_params(mode: str, entropy_threshold: float, call_threshold: float) -> mx.array:
    """Pack gate settings into the ``params`` array the gate functions take."""
    if mode not in MODES:
        raise ValueError(f"gate mode must be one of {sorted(MODES)}, got {mode!r}")
    return mx.array([MODES[mode], entropy_threshold, call_threshold], dtype=mx.float32)


def decide(entropy: mx.array, p_call: mx.array, params: mx.array) -> mx.array:
    """The gate decision from its statistics and ``params`` (see the module contract)."""
    mode = params[0]
    by_call = ((mode == 1) | (mode == 3)) & (p_call >= params[2])
    by_entropy = ((mode == 2) | (mode == 3)) & (entropy >= params[1])
    return by_call | by_entropy


def gate_stats_reference(logits: mx.array, call_id: int, params: mx.array) -> GateStats:
    """Reference gate statistics in plain MLX ops for ``logits`` of shape ``(B, V)`` or ``(V,)``."""
    x = logits.astype(mx.float32)
    if x.ndim == 1:
        x = x[None]
    x = mx.where(mx.isnan(x), -mx.inf, x)
    x = mx.minimum(x, _F32_MAX)  # +inf -> largest finite value
    m = mx.max(x, axis=-1, keepdims=True)  # (B, 1)
    valid = m > -mx.inf
    z = x - mx.where(valid, m, 0.0)  # <= 0, -inf where masked
    e = mx.exp(z)  # 0 where masked
    s = mx.sum(e, axis=-1)  # (B,) >= 1 for valid rows
    ez = mx.sum(mx.where(e > 0, e * z, 0.0), axis=-1)  # avoids 0 * -inf
    valid = valid[:, 0]
    s_safe = mx.where(valid, s, 1.0)
    entropy = mx.where(valid, mx.log(s_safe) - ez / s_safe, 0.0)
    p_top = mx.where(valid, 1.0 / s_safe, 0.0)
    if 0 <= call_id < x.shape[-1]:  # out of range: no <CALL> in this vocabulary
        p_call = mx.where(valid, e[:, call_id] / s_safe, 0.0)
    else:
        p_call = mx.zeros_like(p_top)
    token = mx.argmax(x, axis=-1).astype(mx.int32)
    entropy = mx.maximum(entropy, 0.0)  # rounding can dip a hair below 0 on one-hot rows
    # an all-masked row never fires, even with thresholds <= 0 (module contract)
    return GateStats(entropy, p_call, p_top, token, decide(entropy, p_call, params) & valid)
