"""Injection: inline evidence in the KV cache equals a full prefill; prefix injection regenerates."""
import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from runtime_models import boost_call, check_context, vocab_of

import lacy_mlx
from lacy_mlx.gate import gate_params
from lacy_mlx.runtime import Call, CallbackDelegate, Evidence, GateConfig, Lacy, Token
from lacy_mlx.runtime.decoder import Decoder
from lacy_mlx.runtime.events import output_text
from lacy_mlx.runtime.inject import encode_prompt, inline_evidence_ids
from lacy_mlx.tokens import SpecialIds

PROMPT = "Alan Turing was born in"


def _full_logits(model, ids):
    """Logits at every position from one forward pass over ``ids``, no cache."""
    return model(mx.array(ids)[None])[0].astype(mx.float32)  # (T, V)


def test_inline_injection_equals_prefill_from_scratch(tiny_dir):
    model, tok = mlx_lm.load(str(tiny_dir))
    v = vocab_of(tiny_dir)
    ids = SpecialIds(v["<CALL>"], v["<EVIDENCE>"], v["</EVIDENCE>"])
    params = gate_params("call", 3.0, 0.5)
    dec = Decoder(model, call_id=ids.call, masked_ids=ids.all)
    prompt = tok.encode(PROMPT)
    step = dec.feed(prompt, params)
    fed = list(prompt)
    for _ in range(3):  # a few decode steps through the speculative path
        nxt = dec.advance(step, params, call_on_fire=True)
        fed.append(step.read()[0])
        step = nxt
    dec.trim(1)  # the loop would have built one step ahead; take it back and call here
    fed.pop()
    step = dec.feed([ids.call], params)
    evidence, _ = inline_evidence_ids(tok, "Turing was born in London in 1912.", ids, 64)
    step = dec.feed(evidence, params)
    fed += [ids.call, *evidence]
    assert dec.offset == len(fed) == dec.cache[0].offset

    fresh_dec = Decoder(model, call_id=ids.call, masked_ids=ids.all)
    fresh = fresh_dec.feed(fed, params)
    ref = _full_logits(model, fed)[-1]
    np.testing.assert_allclose(np.array(step.logits[0]), np.array(ref), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.array(step.logits[0]), np.array(fresh.logits[0]), rtol=1e-4, atol=1e-4)
    # Decoding goes on identically from the injected cache and from the fresh one.
    a, b = step, fresh
    for _ in range(5):
        ta, tb = a.read()[0], b.read()[0]
        assert ta == tb
        np.testing.assert_allclose(np.array(a.logits), np.array(b.logits), rtol=1e-4, atol=1e-4)
        a, b = dec.feed([ta], params), fresh_dec.feed([tb], params)


def test_inline_stream_continues_as_a_full_prefill_would(tiny_dir):
    """Every token the SLM decoded after evidence equals the greedy token of a from-scratch pass."""
    model, tok = mlx_lm.load(str(tiny_dir))
    v = vocab_of(tiny_dir)
    boost_call(model, v["<CALL>"], bias=10.0)  # calls at some steps, not all
    lacy = lacy_mlx.load((model, tok), delegate=lambda ctx: "Turing was born in London.",
                         gate=GateConfig(mode="call", call_threshold=0.5))
    events = list(lacy.stream(PROMPT, max_tokens=24))
    calls = [e for e in events if isinstance(e, Call)]
    assert calls, "the boosted <CALL> should fire at least once"
    ctx = list(events[-1].context)
    assert check_context(model, ctx, len(tok.encode(PROMPT)), v) >= 10
    logits = _full_logits(model, ctx)
    # p(<CALL>) from the full pass passes the threshold exactly where the stream called.
    probs = np.array(mx.softmax(logits, axis=-1)[:, v["<CALL>"]])
    call_positions = [i for i, t in enumerate(ctx) if t == v["<CALL>"]]
    assert len(call_positions) == len(calls)
    assert all(probs[i - 1] >= 0.5 for i in call_positions)


def test_prefix_injection_puts_passages_in_the_prompt_and_regenerates(tiny):
    model, tok = tiny
    passages = ["Turing was born in London.", "He worked at Bletchley Park."]
    asked = []

    def search(ctx):
        asked.append(ctx)
        return passages

    lacy = Lacy(model, tok, specials=SpecialIds(), delegate=CallbackDelegate(search, name="kb"),
                gate=GateConfig(mode="entropy", entropy_threshold=0.0))
    assert lacy.injection == "prefix"
    events = list(lacy.stream(PROMPT, max_tokens=20))
    evid = [e for e in events if isinstance(e, Evidence)]
    assert evid and all(e.injection == "prefix" and e.sources == ("kb",) for e in evid)
    assert asked and asked[0].question == PROMPT
    new_prompt = encode_prompt(tok, PROMPT, passages=passages)
    ctx = list(events[-1].context)
    assert tuple(ctx[: len(new_prompt.ids)]) == new_prompt.ids
    out_ids = [e.id for e in events if isinstance(e, Token)]
    assert ctx[len(new_prompt.ids):] == out_ids  # the stream only ever appends
    text = "".join(output_text(e) for e in events)
    assert text == tok.decode(out_ids)
    # Tokens after the last regeneration are the greedy continuation of the passages-prompt.
    last = max(i for i, e in enumerate(events) if isinstance(e, Evidence))
    after = [e.id for e in events[last:] if isinstance(e, Token)]
    logits = _full_logits(model, ctx)
    greedy = np.array(mx.argmax(logits, axis=-1))
    start = len(ctx) - len(after)
    assert after and all(greedy[i - 1] == ctx[i] for i in range(start, len(ctx)))


def test_prefix_passages_go_where_placement_says(tiny):
    _, tok = tiny
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where?"}]
    p = encode_prompt(tok, msgs, passages=["Paris is in France."], placement="user")
    assert "<|user|>Relevant passages:\n[1] Paris is in France.\n\nWhere?" in p.text
    assert p.question == "Where?"
    p = encode_prompt(tok, msgs, passages=["Paris is in France."])  # default: the system turn
    assert "Be brief.\n\nAnswer the question using the passages below.\n\nRelevant passages:\n[1] Paris" in p.text
    p = encode_prompt(tok, msgs[1:], passages=["Paris is in France."])
    assert p.text.index("Paris") < p.text.index("Where?") and p.question == "Where?"


def test_inline_requires_the_tokens(tiny):
    from lacy_mlx.errors import InputError

    model, tok = tiny
    with pytest.raises(InputError, match="prefix"):
        Lacy(model, tok, specials=SpecialIds(call=1), gate=GateConfig(), injection="inline")


def test_retrieve_first_puts_passages_in_before_the_first_token(tiny):
    from lacy_mlx.runtime.events import Call

    model, tok = tiny
    asked = []

    def search(ctx):
        asked.append(ctx)
        return ["Turing was born in London."]

    lacy = Lacy(model, tok, specials=SpecialIds(), delegate=CallbackDelegate(search, name="kb"),
                gate=GateConfig(mode="off"), retrieve_first=True)
    events = list(lacy.stream(PROMPT, max_tokens=6))
    first = [e for e in events if isinstance(e, Call)]
    assert [c.reason for c in first] == ["first"] and first[0].step == -1
    assert len(asked) == 1 and asked[0].question == PROMPT and asked[0].text == ""
    prompt = encode_prompt(tok, PROMPT, passages=["Turing was born in London."])
    assert events[-1].context[: len(prompt.ids)] == prompt.ids
    # with the gate off and no retrieval first, nothing is asked
    assert not [e for e in lacy.stream(PROMPT, max_tokens=3, retrieve_first=False) if isinstance(e, Call)]
    assert len(asked) == 1


def test_titled_passages_name_their_document():
    from types import SimpleNamespace as Hit

    from lacy_mlx.runtime.inject import titled_passages

    hits = [Hit(title="Rene Laennec"), Hit(title=None), Hit(title="Volga")]
    got = titled_passages(["He invented the stethoscope in 1816.", "No title here.", "Volga: the longest river."], hits)
    assert got == ("Rene Laennec: He invented the stethoscope in 1816.", "No title here.", "Volga: the longest river.")
    assert titled_passages(["a", "b"], hits) == ("a", "b")  # hits that do not line up: passages as they are
