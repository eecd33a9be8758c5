"""The stream an app holds: cancel from another thread, break, close, one generation at a time,
and the prompt cache kept across a conversation's turns."""
import threading

import pytest

import lacy_mlx
from lacy_mlx.errors import LacyError
from lacy_mlx.runtime import Done, GateConfig, Token

PROMPT = "Marie Curie was born in"


def _lacy(tiny, **kw):
    return lacy_mlx.load(tiny, gate=GateConfig(mode="off"), **kw)


def test_cancel_from_another_thread_ends_with_cancelled(tiny):
    lacy = _lacy(tiny)
    stream = lacy.stream(PROMPT, max_tokens=200)
    seen = []
    for ev in stream:
        seen.append(ev)
        if isinstance(ev, Token) and len(seen) == 3:
            t = threading.Thread(target=stream.cancel)
            t.start()
            t.join()
    done = seen[-1]
    assert isinstance(done, Done) and done.finish_reason == "cancelled"
    assert stream.done is done and stream.cancelled
    assert done.tokens < 200
    # the Lacy is free again, and the next generation is complete
    assert lacy.generate(PROMPT, max_tokens=5).stats.tokens == 5


def test_break_frees_the_lacy_for_the_next_stream(tiny):
    lacy = _lacy(tiny)
    for i, ev in enumerate(lacy.stream(PROMPT, max_tokens=50)):
        if i == 2:
            break
    assert lacy.generate(PROMPT, max_tokens=4).stats.tokens == 4


def test_close_and_with_block(tiny):
    lacy = _lacy(tiny)
    with lacy.stream(PROMPT, max_tokens=50) as stream:
        next(stream)
    with pytest.raises(StopIteration):
        next(stream)
    assert lacy.generate(PROMPT, max_tokens=3).stats.tokens == 3


def test_two_streams_at_once_raise(tiny):
    lacy = _lacy(tiny)
    first = lacy.stream(PROMPT, max_tokens=50)
    next(first)
    with pytest.raises(LacyError, match="already generating"):
        next(lacy.stream(PROMPT, max_tokens=5))
    first.close()
    assert lacy.generate(PROMPT, max_tokens=2).stats.tokens == 2


def test_bad_arguments_raise_at_the_call(tiny):
    lacy = _lacy(tiny)
    with pytest.raises(lacy_mlx.LacyError):
        lacy.stream(PROMPT, max_tokens=0)
    with pytest.raises(lacy_mlx.LacyError):
        lacy.stream("")


def test_prompt_cache_reuses_a_conversation_prefix(tiny):
    msgs = [{"role": "user", "content": "Where was Marie Curie born?"}]
    fresh = _lacy(tiny)
    cached = _lacy(tiny, )
    cached.reuse_prompt_cache = True
    first = cached.generate(msgs, max_tokens=12)
    assert first.stats.cached_tokens == 0
    turn2 = msgs + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And Alan Turing?"}]
    second = cached.generate(turn2, max_tokens=12)
    n_first_prompt = first.stats.prompt_tokens
    assert second.stats.cached_tokens >= n_first_prompt  # at least the whole first prompt
    assert second.stats.cached_tokens < second.stats.prompt_tokens
    assert second.text == fresh.generate(turn2, max_tokens=12).text
    # the same prompt again: all but its last token come from the cache
    again = cached.generate(turn2, max_tokens=12)
    assert again.stats.cached_tokens == again.stats.prompt_tokens - 1
    assert again.text == second.text


def test_prompt_cache_dropped_after_an_interrupted_stream(tiny):
    lacy = _lacy(tiny)
    lacy.reuse_prompt_cache = True
    lacy.generate(PROMPT, max_tokens=4)
    for i, _ in enumerate(lacy.stream(PROMPT, max_tokens=40)):
        if i == 1:
            break
    assert lacy.generate(PROMPT, max_tokens=4).stats.cached_tokens == 0


@pytest.mark.parametrize("mode", ["off", "entropy"])
def test_logprobs_match_a_full_softmax(tiny, mode):
    import mlx.core as mx
    import numpy as np

    model, tok = tiny
    lacy = lacy_mlx.load(tiny, gate=GateConfig(mode=mode, entropy_threshold=99.0))
    toks = [e for e in lacy.stream(PROMPT, max_tokens=6, logprobs=3) if isinstance(e, Token)]
    ids = list(tok.encode(PROMPT)) + [t.id for t in toks]
    logits = model(mx.array(ids)[None])[0].astype(mx.float32)
    # The lacy tokens are masked in every gate mode (never streamed as text): the distribution
    # tokens are drawn from.
    specials = [lacy.specials.call, lacy.specials.evidence_start, lacy.specials.evidence_end]
    logits = logits.at[:, specials].add(-mx.inf)
    lp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    n0 = len(ids) - len(toks)
    for i, t in enumerate(toks):
        row = lp[n0 + i - 1]
        assert abs(t.logprob - row[t.id]) < 1e-3
        assert [a for a, _ in t.top_logprobs] == list(np.argsort(-row)[:3])
        assert t.top_logprobs[0][0] == t.id  # greedy: the best one was emitted
