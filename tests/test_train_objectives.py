"""The four objectives choose the call targets their definitions say, on one crafted batch."""
import mlx.core as mx
import numpy as np
import pytest

from lacy_mlx.train.objectives import select_calls, token_losses

# One row of 10 targets. Spans: 1 = tokens 1-2 (one hard token), 2 = tokens 5-7 (all hard), 3 = token 9.
NLL = mx.array([[0.1, 0.2, 3.0, 9.0, 0.5, 4.0, 5.0, 6.0, 0.3, 2.0]])
SPAN = mx.array([[0, 1, 1, 0, 0, 2, 2, 2, 0, 3]])
FIRST = mx.array([[0, 1, 0, 0, 0, 1, 0, 0, 0, 1]]).astype(mx.bool_)
ELIGIBLE = mx.ones((1, 10), dtype=mx.bool_)
REF = mx.array([[0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # the reference also finds token 3 hard


def chosen(objective, **kw):
    mask = select_calls(objective, NLL, span=SPAN, first=FIRST, eligible=ELIGIBLE, ref_nll=REF, **kw)
    return set(np.flatnonzero(np.array(mask[0])).tolist())


def test_four_objectives_choose_differently():
    picks = {
        # spans scored by mean loss: 1.6, 5.0, 2.0 -> top 60% of 3 spans = spans 2 and 3; call at their start
        "lacy": chosen("lacy", q=0.6),
        # the top 20% of all targets by loss, factual or not: the hard function word (3) and token 7
        "loss": chosen("loss", budget=0.2),
        # the top 20% by excess loss over the reference: token 3's excess is 0, so tokens 7 and 6
        "rho1": chosen("rho1", budget=0.2),
        "plain": chosen("plain"),
    }
    assert picks == {"lacy": {5, 9}, "loss": {3, 7}, "rho1": {6, 7}, "plain": set()}


def test_lacy_variants_follow_span_scoring():
    assert chosen("lacy", q=0.6, call_at="span") == {5, 6, 7, 9}
    # Max over the span ranks span 1 (its hard second token) above span 3.
    assert chosen("lacy", q=0.6, span_reduce="max") == {1, 5}
    # Never a non-factual target, whatever its loss.
    assert 3 not in chosen("lacy", q=1.0, call_at="span")
    # Ineligible targets (inserted evidence, copied values) are never chosen.
    mask = select_calls("lacy", NLL, span=SPAN, first=FIRST, eligible=mx.zeros((1, 10), dtype=mx.bool_))
    assert not np.array(mask).any()


def test_rho1_needs_a_reference():
    with pytest.raises(ValueError, match="ref_nll"):
        select_calls("rho1", NLL, span=SPAN, first=FIRST, eligible=ELIGIBLE)


def _softmax_refs(logits):
    """Numpy references: log-sum-exp with and without the <CALL> column (id 1)."""
    return np.log(np.exp(logits).sum(-1)), np.log(np.exp(np.delete(logits, 1, axis=-1)).sum(-1))


def test_token_losses_match_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 4, 6)).astype(np.float32)
    y = np.array([[2, 3, 4, 5]])
    call = np.array([[False, True, False, False]])
    full = np.array([[False, False, True, False]])
    loss, got_call = token_losses(mx.array(logits), mx.array(y), 1, mx.array(full), "lacy",
                                  lambda nll: mx.array(call))
    lse, lse_nc = _softmax_refs(logits)
    want = [lse_nc[0, 0] - logits[0, 0, 2], lse[0, 1] - logits[0, 1, 1],
            lse[0, 2] - logits[0, 2, 4], lse_nc[0, 3] - logits[0, 3, 5]]
    np.testing.assert_allclose(np.array(loss[0]), want, rtol=1e-5)
    plain, _ = token_losses(mx.array(logits), mx.array(y), 1, mx.array(full), "plain", lambda nll: None)
    np.testing.assert_allclose(np.array(plain[0]), lse[0] - logits[0, np.arange(4), y[0]], rtol=1e-5)


def test_renormalize_facts_and_copy_weight():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 4, 6)).astype(np.float32)
    y = np.array([[2, 3, 4, 5]])
    full = np.array([[False, False, True, False]])
    fact = np.array([[True, False, False, False]])
    no_calls = lambda nll: mx.zeros(nll.shape, dtype=mx.bool_)  # noqa: E731
    loss, _ = token_losses(mx.array(logits), mx.array(y), 1, mx.array(full), "lacy", no_calls,
                           fact=mx.array(fact), renormalize="facts", copy_weight=3.0)
    lse, lse_nc = _softmax_refs(logits)
    true = logits[0, np.arange(4), y[0]]
    # A factual target is scored without <CALL>; a plain one on the full softmax (so p(<CALL>) falls
    # there); a copied value on the full softmax, times the copy weight.
    want = [lse_nc[0, 0] - true[0], lse[0, 1] - true[1], 3.0 * (lse[0, 2] - true[2]), lse[0, 3] - true[3]]
    np.testing.assert_allclose(np.array(loss[0]), want, rtol=1e-5)
    with pytest.raises(ValueError, match="fact mask"):
        token_losses(mx.array(logits), mx.array(y), 1, mx.array(full), "lacy", no_calls, renormalize="facts")


def test_fast_logsumexp_and_its_gradient_match_mlx():
    from lacy_mlx.train.objectives import logsumexp

    x = mx.array(np.random.default_rng(2).normal(scale=6.0, size=(3, 5, 700)).astype(np.float32))
    np.testing.assert_allclose(np.array(logsumexp(x)), np.array(mx.logsumexp(x, axis=-1)), rtol=1e-6, atol=1e-5)
    w = mx.arange(15, dtype=mx.float32).reshape(3, 5)
    g_fast = mx.grad(lambda a: (logsumexp(a) * w).sum())(x)
    g_ref = mx.grad(lambda a: (mx.logsumexp(a, axis=-1) * w).sum())(x)
    np.testing.assert_allclose(np.array(g_fast), np.array(g_ref), rtol=1e-5, atol=1e-6)
    compiled = mx.compile(mx.grad(lambda a: logsumexp(a).sum()))  # as inside the trainer's step
    np.testing.assert_allclose(np.array(compiled(x)), np.array(mx.softmax(x, axis=-1)), rtol=1e-5, atol=1e-6)
