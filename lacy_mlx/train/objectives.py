"""Training objectives: which targets become ``<CALL>``, and the per-token loss.

Selection (``select_calls``), on one batch, with ``nll`` the current model's loss of each target
on the softmax without ``<CALL>`` (no gradient flows through the choice):

- ``lacy``: factual spans (from the tagger) are scored by the mean (or max) ``nll`` over the whole
  span; the spans in the top ``q`` of the batch's spans become calls (at the span's first token,
  where the cascade must ask; ``call_at="span"`` marks every token of the span). Scoring the whole
  span, not its first token, keeps the choice about what the model knows rather than about the
  relation's constant first word ("University").
- ``loss``: the top ``budget`` fraction of all ordinary targets by ``nll``, factual or not.
- ``rho1``: the top ``budget`` fraction of all ordinary targets by excess loss ``nll - ref_nll``
  against a reference model (Rho-1 style).
- ``plain``: no calls; ordinary language modelling.

Loss (``token_losses``): at a call the target is ``<CALL>`` (full softmax); at a copied value the
true token on the full softmax (weighted by ``copy_weight``); elsewhere the true token on the
softmax renormalised without ``<CALL>``, so predicting a token never pushes the model away from
calling (plain LM: full softmax). With ``renormalize="facts"`` only factual targets are
renormalised; the others use the full softmax, which teaches "no call here" (the paper's rule
leaves p(``<CALL>``) free there, and a small model then calls mid-phrase: "She was <CALL>").
"""
from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx

from lacy_mlx.polyops import exp_nonpos

OBJECTIVES = ("lacy", "loss", "rho1", "plain")


@mx.custom_function
def _logsumexp_cpu(x: mx.array) -> mx.array:
    # MLX's CPU exp is scalar (~14 ns an element): on a (B, T, V) logits tensor it was a fifth of
    # a training step. exp_nonpos is the vectorised polynomial the encoder uses too (relative error ~1e-7).
    m = mx.stop_gradient(mx.max(x, axis=-1, keepdims=True))
    return m[..., 0] + mx.log(exp_nonpos(x - m).sum(axis=-1))


@_logsumexp_cpu.vjp
def _logsumexp_cpu_vjp(x, cotangent, output):
    return cotangent[..., None] * exp_nonpos(x - output[..., None])  # d lse / dx = softmax(x)


def logsumexp(x: mx.array) -> mx.array:
    """``logsumexp`` over the last axis of float32 ``x``: the fast polynomial form on CPU."""
    return _logsumexp_cpu(x) if mx.default_device() == mx.cpu else mx.logsumexp(x, axis=-1)


def _top_fraction(score: mx.array, valid: mx.array, frac: float) -> mx.array:
    """Mask of the ``ceil(frac * n)`` highest scores among ``valid`` entries (1-D; ties kept)."""
    n = valid.sum()
    k = mx.ceil(frac * n).astype(mx.int32)
    s = mx.where(valid, score, -mx.inf)
    ordered = mx.sort(s)  # ascending; invalid entries (-inf) first
    size = s.shape[0]
    thr = mx.take(ordered, mx.clip(size - k, 0, size - 1))
    return valid & (s >= thr) & (k > 0)


def span_scores(nll: mx.array, span: mx.array, n_slots: int, reduce: str = "mean") -> mx.array:
    """Per-span score (``n_slots`` entries, slot 0 unused): mean or max of ``nll`` over each span's tokens."""
    flat_s, flat_n = span.reshape(-1), nll.reshape(-1)
    if reduce == "max":
        return mx.full((n_slots,), -mx.inf).at[flat_s].maximum(flat_n)
    sums = mx.zeros((n_slots,)).at[flat_s].add(flat_n)
    counts = mx.zeros((n_slots,)).at[flat_s].add(mx.ones_like(flat_n))
    return sums / mx.maximum(counts, 1)


def select_calls(objective: str, nll: mx.array, *, span: mx.array, first: mx.array, eligible: mx.array,
                 ref_nll: mx.array | None = None, q: float = 0.6, budget: float = 0.15,
                 span_reduce: str = "mean", call_at: str = "first") -> mx.array:
    """Boolean ``(B, T)`` mask of targets replaced by ``<CALL>`` (see the module docstring)."""
    if objective == "plain":
        return mx.zeros(nll.shape, dtype=mx.bool_)
    if objective == "lacy":
        n_slots = nll.size + 1  # span numbers are at most B*T
        span = mx.where(eligible, span, 0)
        present = mx.zeros((n_slots,), dtype=mx.int32).at[span.reshape(-1)].add(1) > 0
        present = present & (mx.arange(n_slots) > 0)
        chosen = _top_fraction(span_scores(nll, span, n_slots, span_reduce), present, q)
        call = chosen[span] & (span > 0)
        return call & first if call_at == "first" else call
    if objective == "loss":
        score = nll
    elif objective == "rho1":
        if ref_nll is None:
            raise ValueError("the rho1 objective needs ref_nll from a reference model")
        score = nll - ref_nll
    else:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return _top_fraction(score.reshape(-1), eligible.reshape(-1), budget).reshape(nll.shape)


def token_losses(logits: mx.array, y: mx.array, call_id: int, full: mx.array, objective: str,
                 select: Callable[[mx.array], mx.array], *, fact: mx.array | None = None,
                 renormalize: str = "all", copy: mx.array | None = None,
                 copy_weight: float = 1.0) -> tuple[mx.array, mx.array]:
    """Per-target loss ``(B, T)`` and the call mask; ``select(nll)`` chooses calls from the detached nll.

    ``full`` marks full-softmax targets; ``copy`` (default: ``full``) those of them weighted by
    ``copy_weight``. ``fact`` (bool ``(B, T)``, factual targets) is needed for ``renormalize="facts"``.
    """
    logits = logits.astype(mx.float32)
    lse = logsumexp(logits)
    l_true = mx.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    nll_full = lse - l_true
    if objective == "plain":
        return nll_full, mx.zeros(nll_full.shape, dtype=mx.bool_)
    l_call = logits[..., call_id]
    # log-sum-exp without <CALL>: lse + log(1 - p_call); the clamp keeps it finite when p_call -> 1.
    lse_no_call = lse + mx.log1p(-mx.exp(mx.minimum(l_call - lse, -1e-6)))
    nll_no_call = lse_no_call - l_true
    call = select(mx.stop_gradient(nll_no_call))
    if renormalize == "facts":
        if fact is None:
            raise ValueError("renormalize='facts' needs the fact mask")
        nll_no_call = mx.where(fact, nll_no_call, nll_full)
    elif renormalize != "all":
        raise ValueError(f"renormalize must be 'all' or 'facts', got {renormalize!r}")
    if copy_weight != 1.0:
        nll_full = mx.where(full if copy is None else copy, copy_weight * nll_full, nll_full)
    loss = mx.where(call, lse - l_call, mx.where(full, nll_full, nll_no_call))
    return loss, call
