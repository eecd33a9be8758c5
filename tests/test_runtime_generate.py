"""Streaming generation on tiny random mlx-lm models: parity with mlx-lm, forced calls, events."""
import math

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step, stream_generate
from runtime_models import boost_call, check_context, vocab_of

import lacy_mlx
from lacy_mlx.errors import InputError
from lacy_mlx.runtime import Call, CallbackDelegate, DelegateError, Done, Evidence, GateConfig, Lacy, Token
from lacy_mlx.tokens import SpecialIds

PROMPT = "Marie Curie was born in"


def _mlx_lm_greedy(model, tokenizer, prompt_ids, n):
    out = []
    for tok, _ in generate_step(mx.array(prompt_ids), model, max_tokens=n):
        if tok in tokenizer.eos_token_ids:
            break
        out.append(tok)
    return out


def test_gate_off_equals_mlx_lm_greedy(tiny):
    model, tok = tiny
    lacy = lacy_mlx.load(tiny, gate=GateConfig(mode="off"))
    n = 40
    tokens = [e.id for e in lacy.stream(PROMPT, max_tokens=n) if isinstance(e, Token)]
    ids = tok.encode(PROMPT)
    assert tokens == _mlx_lm_greedy(model, tok, ids, n)
    text = lacy.generate(PROMPT, max_tokens=n, gate=GateConfig(mode="off")).text
    assert text == "".join(r.text for r in stream_generate(model, tok, PROMPT, max_tokens=n))


def test_gate_off_equals_mlx_lm_on_chat_messages(tiny):
    model, tok = tiny
    msgs = [{"role": "user", "content": "Where was Marie Curie born?"}]
    lacy = lacy_mlx.load(tiny, gate=GateConfig(mode="off"))
    got = [e.id for e in lacy.stream(msgs, max_tokens=25) if isinstance(e, Token)]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True)
    assert got == _mlx_lm_greedy(model, tok, ids, 25)


def test_gate_that_never_fires_keeps_greedy_tokens(tiny):
    """Mode call on a model whose <CALL> stays unlikely: same tokens as mlx-lm, one sync per step."""
    model, tok = tiny
    lacy = lacy_mlx.load(tiny, gate=GateConfig(mode="call", call_threshold=0.99))
    events = list(lacy.stream(PROMPT, max_tokens=30))
    tokens = [e.id for e in events if isinstance(e, Token)]
    done = events[-1]
    assert isinstance(done, Done) and done.calls == 0
    assert done.host_syncs == done.steps == len(tokens)
    specials = set(SpecialIds(1, 2, 3).all)
    ref = _mlx_lm_greedy(model, tok, tok.encode(PROMPT), 30)
    if not specials.intersection(ref):  # a control token mlx-lm emits is masked here
        assert tokens == ref
    assert all(0.0 <= e.p_call <= 1.0 and e.entropy >= 0 for e in events if isinstance(e, Token))


def test_forced_calls_through_boosted_call_logit(tiny_dir):
    import mlx_lm

    model, tok = mlx_lm.load(str(tiny_dir))
    call_id = vocab_of(tiny_dir)["<CALL>"]
    boost_call(model, call_id, bias=30.0)
    seen = []

    def evidence(ctx):
        seen.append(ctx)
        return "Warsaw is a city."

    lacy = lacy_mlx.load((model, tok), delegate=evidence, gate=GateConfig(mode="call", call_threshold=0.5))
    assert lacy.specials.call == call_id and lacy.injection == "inline"
    events = list(lacy.stream(PROMPT, max_tokens=12))
    calls = [e for e in events if isinstance(e, Call)]
    tokens = [e for e in events if isinstance(e, Token)]
    assert calls and all(c.reason == "call" and c.p_call > 0.5 for c in calls)
    assert all(t.id not in SpecialIds(1, 2, 3).all for t in tokens)  # control tokens never output
    assert "<CALL>" not in "".join(t.text for t in tokens)
    # Each call is followed by inline evidence and at least one token before the next call (min_gap 1).
    kinds = [type(e).__name__ for e in events]
    assert "CallCall" not in "".join(kinds)
    assert all(isinstance(e, Evidence) and e.injection == "inline" for e in events if isinstance(e, Evidence))
    assert seen[0].question == PROMPT and seen[0].p_call > 0.5
    done = events[-1]
    assert done.calls == len(calls) and done.tokens == 12
    # The KV cache held what a from-scratch pass over the final context computes (calls at the
    # last position included, where no speculative step fed <CALL>).
    assert check_context(model, list(done.context), len(tok.encode(PROMPT)), vocab_of(tiny_dir)) == 12
    assert done.context.count(call_id) == len(calls)
    assert done.call_rate == pytest.approx(len(calls) / done.tokens)  # calls per generated token
    assert done.host_syncs == done.steps


def test_model_without_call_token_gets_p_call_zero_and_entropy_mode_works(tiny):
    model, tok = tiny
    lacy = Lacy(model, tok, specials=SpecialIds(), gate=GateConfig(mode="entropy", entropy_threshold=0.0),
                delegate=CallbackDelegate(lambda ctx: None, name="nothing"))
    assert lacy.injection == "prefix" and not lacy.has_call_token
    events = list(lacy.stream(PROMPT, max_tokens=8))
    calls = [e for e in events if isinstance(e, Call)]
    assert calls and all(c.p_call == 0.0 and c.reason == "entropy" for c in calls)
    errors = [e for e in events if isinstance(e, DelegateError)]
    assert len(errors) == len(calls) and errors[0].error == "empty"
    assert events[-1].tokens == 8


def test_call_mode_on_a_model_without_call_never_fires(tiny):
    model, tok = tiny
    lacy = Lacy(model, tok, specials=SpecialIds(), gate=GateConfig(mode="call", call_threshold=0.0))
    done = list(lacy.stream(PROMPT, max_tokens=10))[-1]
    assert done.calls == 0  # p_call is 0: the call criterion is not applied without <CALL>


def test_stream_stops_at_eos_and_reports_stop(tiny):
    model, tok = tiny
    eos = next(iter(tok.eos_token_ids))
    # A logits bias through a boosted lm_head row makes EOS the greedy token at once.
    import copy

    m2 = copy.deepcopy(model)
    boost_call(m2, eos, bias=50.0)
    lacy = lacy_mlx.load((m2, tok), gate=GateConfig(mode="off"))
    events = list(lacy.stream(PROMPT, max_tokens=10))
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop" and events[-1].tokens == 0


def test_bad_arguments_raise_input_error(tiny):
    lacy = lacy_mlx.load(tiny)
    with pytest.raises(InputError):
        list(lacy.stream(PROMPT, max_tokens=0))
    with pytest.raises(InputError):
        list(lacy.stream([{"content": "no role"}], max_tokens=3))
    with pytest.raises(InputError):
        lacy_mlx.load(tiny, injection="sideways")


def test_generate_result_and_sampling(tiny):
    from lacy_mlx.runtime import Sampling

    lacy = lacy_mlx.load(tiny, gate=GateConfig(mode="entropy", entropy_threshold=0.0),
                         delegate=lambda ctx: "Paris.")
    r1 = lacy.generate(PROMPT, max_tokens=10, sampling=Sampling(temp=0.8, seed=3))
    r2 = lacy.generate(PROMPT, max_tokens=10, sampling=Sampling(temp=0.8, seed=3))
    assert r1.text == r2.text and r1.stats.tokens == 10
    assert r1.calls and r1.sources == ["<lambda>"]
    assert math.isfinite(r1.stats.tokens_per_s)


def test_ids_and_gate_come_from_config_or_vocab(tiny_dir, tmp_path):
    import shutil

    from lacy_mlx.tokens import LacySection, read_lacy_section, write_lacy_section

    folder = shutil.copytree(tiny_dir, tmp_path / "with-gate")
    section = read_lacy_section(folder)
    write_lacy_section(folder, LacySection(section.call_token_id, section.evidence_start_id, section.evidence_end_id,
                                           gate={"mode": "either", "call_threshold": 0.3, "unknown": 1}))
    lacy = lacy_mlx.load(str(folder))
    assert lacy.gate.mode == "either" and lacy.gate.call_threshold == 0.3
    # Rewriting the section keeps entries it does not own (the query tower's).
    import json as _json

    cfg = _json.loads((folder / "config.json").read_text())
    cfg["lacy"]["query_tower"] = {"hidden_size": 8}
    (folder / "config.json").write_text(_json.dumps(cfg))
    write_lacy_section(folder, LacySection(section.call_token_id, retrieval={"k": 2}))
    lacy_cfg = _json.loads((folder / "config.json").read_text())["lacy"]
    assert lacy_cfg["query_tower"] == {"hidden_size": 8} and lacy_cfg["retrieval"] == {"k": 2}
    assert read_lacy_section(folder).retrieval == {"k": 2}
    assert lacy.specials == SpecialIds(section.call_token_id, section.evidence_start_id, section.evidence_end_id)
    # Without a lacy section, the ids are found in the tokenizer's vocabulary.
    bare = shutil.copytree(tiny_dir, tmp_path / "bare")
    import json

    cfg = json.loads((bare / "config.json").read_text())
    cfg.pop("lacy")
    (bare / "config.json").write_text(json.dumps(cfg))
    lacy = lacy_mlx.load(str(bare))
    v = vocab_of(bare)
    assert lacy.specials == SpecialIds(v["<CALL>"], v["<EVIDENCE>"], v["</EVIDENCE>"])
    assert lacy.gate.mode == "call" and lacy.injection == "inline"


def test_max_sentences_stops_after_a_sentence_end(tiny):
    from lacy_mlx.runtime import Lacy

    model, tok = tiny
    lacy = Lacy(model, tok, specials=SpecialIds(), gate=GateConfig(mode="off"))
    full = lacy.generate("a", max_tokens=60)  # this seed writes "." after 17 tokens, then goes on
    one = lacy.generate("a", max_tokens=60, max_sentences=1)
    assert full.stats.tokens > one.stats.tokens and full.text.startswith(one.text)
    assert one.stats.finish_reason == "stop" and one.text.endswith(".")


def test_probe_reports_what_the_model_alone_would_write_and_changes_nothing(tiny_dir):
    """stream(probe=n): each Call carries the SLM's own next n tokens; output and cache are as without it."""
    import mlx_lm

    model, tok = mlx_lm.load(str(tiny_dir))
    call_id = vocab_of(tiny_dir)["<CALL>"]
    boost_call(model, call_id, bias=30.0)
    lacy = lacy_mlx.load((model, tok), delegate=lambda ctx: "Warsaw is a city.",
                         gate=GateConfig(mode="call", call_threshold=0.5))
    plain = list(lacy.stream(PROMPT, max_tokens=12))
    probed = list(lacy.stream(PROMPT, max_tokens=12, probe=5))
    assert [e.id for e in probed if isinstance(e, Token)] == [e.id for e in plain if isinstance(e, Token)]
    assert probed[-1].context == plain[-1].context
    assert check_context(model, list(probed[-1].context), len(tok.encode(PROMPT)), vocab_of(tiny_dir)) == 12
    calls = [e for e in probed if isinstance(e, Call)]
    assert calls and all(c.alone is not None for c in calls)
    assert all(c.alone is None for c in plain if isinstance(c, Call))
    # The first call is at step 0: its probe is the start of the generation with no call allowed.
    alone_ids = [e.id for e in lacy.stream(PROMPT, max_tokens=5, max_calls=0) if isinstance(e, Token)]
    assert calls[0].step == 0 and calls[0].alone == tok.decode(alone_ids)
    with pytest.raises(InputError, match="probe"):
        lacy.stream(PROMPT, probe=-1)
