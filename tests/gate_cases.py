"""Shared pieces of the gate tests: a float64 numpy gate, edge-case rows, and a parity check.

Imported by tests/test_gate_reference.py and tests/test_kernels_*.py (pytest puts tests/ on the path).
"""
from __future__ import annotations

import mlx.core as mx
import numpy as np

from lacy_mlx.gate import MODES, GateStats, gate_params, gate_stats_reference

F32_MAX = float(np.finfo(np.float32).max)


def numpy_gate(x: np.ndarray, call_id: int) -> dict:
    """The gate contract in float64 numpy for a (B, V) array of logits."""
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isnan(x), -np.inf, np.minimum(x, F32_MAX))
    m = x.max(axis=-1, keepdims=True)
    valid = m[:, 0] > -np.inf
    with np.errstate(invalid="ignore"):
        z = x - np.where(valid[:, None], m, 0.0)
        e = np.exp(z)
        ez = np.where(e > 0, e * z, 0.0).sum(-1)
    s = np.where(valid, e.sum(-1), 1.0)
    entropy = np.where(valid, np.maximum(np.log(s) - ez / s, 0.0), 0.0)
    p_top = np.where(valid, 1.0 / s, 0.0)
    p_call = np.zeros_like(p_top)
    if 0 <= call_id < x.shape[-1]:
        p_call = np.where(valid, e[:, call_id] / s, 0.0)
    token = np.where(valid, np.argmax(x, axis=-1), 0)
    return {"entropy": entropy, "p_call": p_call, "p_top": p_top, "token": token, "valid": valid}


def numpy_decide(entropy, p_call, valid, mode: int, ent_t: float, call_t: float) -> np.ndarray:
    """The decision rule of the contract applied to given statistics (float32 thresholds)."""
    fire = np.zeros(np.shape(entropy), dtype=bool)
    if mode in (1, 3):
        fire |= np.asarray(p_call) >= np.float32(call_t)
    if mode in (2, 3):
        fire |= np.asarray(entropy) >= np.float32(ent_t)
    return fire & valid


def as_numpy(stats: GateStats) -> dict:
    mx.eval(stats.entropy, stats.p_call, stats.p_top, stats.token, stats.decision)
    return {
        "entropy": np.array(stats.entropy), "p_call": np.array(stats.p_call),
        "p_top": np.array(stats.p_top), "token": np.array(stats.token),
        "decision": np.array(stats.decision),
    }


def edge_rows(rng: np.random.Generator, rows: int, vocab: int) -> np.ndarray:
    """float32 logits with -inf, NaN, +inf, huge magnitudes, ties and an all-masked row."""
    x = (rng.standard_normal((rows, vocab)) * rng.choice([0.5, 3.0, 12.0])).astype(np.float32)
    pick = rng.random((rows, vocab))
    x[pick < 0.05] = -np.inf
    x[(pick >= 0.05) & (pick < 0.06)] = np.nan
    x[(pick >= 0.06) & (pick < 0.065)] = 1e30
    x[(pick >= 0.065) & (pick < 0.07)] = -1e30
    for r in range(rows):  # ties for the max at two places
        k = rng.integers(0, vocab, size=2)
        x[r, k] = np.nanmax(np.where(np.isinf(x[r]), np.nan, x[r])) if vocab > 2 else 1.0
    if rows > 2:
        x[1] = -np.inf
        x[2, rng.integers(0, vocab)] = np.inf
    return x


def check_parity(gate, logits: mx.array, call_id: int, mode: str = "either",
                 ent_t: float = 2.0, call_t: float = 0.01) -> None:
    """Assert ``gate`` matches the reference ops on ``logits`` (same contract, float32 tolerance)."""
    params = gate_params(mode, ent_t, call_t)
    got = as_numpy(gate(logits, call_id, params))
    want = as_numpy(gate_stats_reference(logits, call_id, params))
    rows = 1 if logits.ndim == 1 else logits.shape[0]
    for key in ("entropy", "p_call", "p_top", "token", "decision"):
        assert got[key].shape == (rows,), (key, got[key].shape)
    np.testing.assert_array_equal(got["token"], want["token"])
    for key in ("entropy", "p_call", "p_top"):
        assert np.all(np.isfinite(got[key])), key
        np.testing.assert_allclose(got[key], want[key], rtol=2e-4, atol=2e-5, err_msg=key)
    valid = want["p_top"] > 0
    fire = numpy_decide(got["entropy"], got["p_call"], valid, MODES[mode], ent_t, call_t)
    np.testing.assert_array_equal(got["decision"], fire)
