"""Delegates: retrieval (text and latent queries, real Store), model cascade, callbacks, failures."""
import time

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import numpy as np
import pytest
from mlx_lm.generate import generate_step

import lacy_mlx
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import InputError
from lacy_mlx.query_tower import QueryTower
from lacy_mlx.runtime import (
    Call,
    CallbackDelegate,
    CallContext,
    DelegateError,
    Done,
    Evidence,
    GateConfig,
    LatentQuery,
    ModelDelegate,
    RetrievalDelegate,
    TextQuery,
    Token,
    output_text,
)
from lacy_mlx.runtime.hidden import HiddenStateUnsupported, split_forward
from lacy_mlx.store import Store

PROMPT = "Alan Turing was born in"
ALWAYS = GateConfig(mode="entropy", entropy_threshold=0.0, min_gap=2)
DOCS = [
    {"external_id": "turing", "title": "Alan Turing", "text": "Alan Turing was born in London in 1912."},
    {"external_id": "curie", "title": "Marie Curie", "text": "Marie Curie was born in Warsaw in 1867."},
    {"external_id": "seine", "title": "Seine", "text": "The river Seine flows through Paris."},
]


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "kb.db", embedder=HashedEmbedder(dim=64)) as s:
        s.add_documents(DOCS)
        yield s


def _events(lacy, prompt=PROMPT, n=12, **kw):
    events = list(lacy.stream(prompt, max_tokens=n, **kw))
    assert isinstance(events[-1], Done)
    return events


def test_retrieval_text_query_end_to_end(tiny, store):
    lacy = lacy_mlx.load(tiny, delegate=RetrievalDelegate(store, k=2), gate=ALWAYS)
    events = _events(lacy)
    calls = [e for e in events if isinstance(e, Call)]
    assert calls and all(c.delegate == "retrieval" and isinstance(c.query, str) and c.query for c in calls)
    assert calls[0].hits[0].title == "Alan Turing"  # the question leads the first, short query
    evid = [e for e in events if isinstance(e, Evidence)]
    assert evid and evid[0].injection == "inline" and "London" in evid[0].text
    assert "Alan Turing" in evid[0].sources
    done = events[-1]
    assert done.retrieval_s > 0 and done.delegate_s >= done.retrieval_s and done.tokens == 12


def test_text_query_masks_low_confidence_tokens():
    ctx = CallContext(
        step=5, prompt="", question="Tell me about Turing.", text="Alan Turing was born in Xq",
        sentence_tokens=("Alan", " Turing", " was", " born", " in", " Xq"),
        sentence_confidence=(0.9, 0.95, 0.8, 0.9, 0.7, 0.05),
    )
    assert TextQuery(mask_below=0.4).build(ctx) == "Alan Turing was born in"
    short = CallContext(step=1, prompt="", question="First. Where was Curie born?", text="In",
                        sentence_tokens=("In",), sentence_confidence=(0.1,))
    assert TextQuery().build(short) == "Where was Curie born?"
    subjectless = CallContext(step=3, prompt="", question="<|endoftext|>Lena Santos", text="She was born in",
                              sentence_tokens=("She", " was", " born", " in"), sentence_confidence=(0.9,) * 4)
    # "born" is the only word that names anything: the question's subject goes in front
    assert TextQuery().build(subjectless) == "Lena Santos She was born in"
    assert TextQuery(anchor=True).build(subjectless) == "Lena Santos She was born in"
    vague = CallContext(step=3, prompt="", question="Who was Marie Curie?", text="She was a",
                        sentence_tokens=("She", " was", " a"), sentence_confidence=(0.9,) * 3)
    assert TextQuery().build(vague) == "Who was Marie Curie? She was a"


class _Spy:
    """A latent builder that records the hidden state it gets."""

    needs_hidden = True

    def __init__(self, tower):
        self.inner = LatentQuery(tower)
        self.hidden = []

    def build(self, ctx):
        self.hidden.append((ctx.step, np.array(ctx.hidden)))
        return self.inner.build(ctx)


def test_latent_query_uses_the_slm_hidden_state_without_a_second_pass(tiny_dir, store):
    model, tok = mlx_lm.load(str(tiny_dir))
    mx.random.seed(0)
    tower = QueryTower(hidden_size=64, embed_dim=store.dim)
    spy = _Spy(tower)
    delegate = RetrievalDelegate(store, query=spy, k=2)
    lacy = lacy_mlx.load((model, tok), delegate=delegate, gate=ALWAYS)
    events = _events(lacy, n=6)
    calls = [e for e in events if isinstance(e, Call)]
    assert calls and all(len(c.hits) == 2 for c in calls)
    # The hidden state at the first call equals model.model's last state over the prompt.
    step0, h0 = spy.hidden[0]
    assert step0 == 0
    ref = model.model(mx.array(tok.encode(PROMPT))[None])[0, -1]
    np.testing.assert_allclose(h0, np.array(ref), rtol=1e-4, atol=1e-4)
    latent = RetrievalDelegate(store, query="latent", tower=tower)
    assert latent.needs_hidden and latent.query_kind == "latent"
    out = latent(CallContext(0, "", "", "", hidden=ref))
    assert out.query == "<latent>" and out.hits


def test_latent_query_checks_the_tower(store, tiny):
    pending = RetrievalDelegate(store, query="latent")  # no tower: load() supplies the model's
    with pytest.raises(InputError, match="query tower"):
        pending(CallContext(0, "", "", ""))
    with pytest.raises(InputError, match="query tower"):  # the tiny model ships none
        lacy_mlx.load(tiny, delegate=pending)
    with pytest.raises(InputError, match="dim"):
        RetrievalDelegate(store, query="latent", tower=QueryTower(64, store.dim + 1))


def test_split_forward_matches_model_and_refuses_odd_heads(tiny):
    model, _ = tiny
    fwd = split_forward(model)
    x = mx.array([[5, 6, 7]])
    h, logits = fwd(x, None)
    np.testing.assert_allclose(np.array(logits), np.array(model(x)[:, -1]), rtol=1e-5, atol=1e-5)
    assert h.shape == (1, 64)

    class Capped(nn.Module):  # a family whose logits are more than a linear head
        def __init__(self, inner):
            super().__init__()
            self.model, self.lm_head, self.args = inner.model, inner.lm_head, inner.args

        def __call__(self, x, cache=None):
            return 5.0 * mx.tanh(self.lm_head(self.model(x, cache)) / 5.0)

    with pytest.raises(HiddenStateUnsupported, match="text query"):
        split_forward(Capped(model))


def test_raising_delegate_never_ends_generation(tiny):
    def broken(ctx):
        raise RuntimeError("index offline")

    lacy = lacy_mlx.load(tiny, delegate=broken, gate=ALWAYS)
    events = _events(lacy, n=10)
    errors = [e for e in events if isinstance(e, DelegateError)]
    assert errors and errors[0].error == "RuntimeError" and "index offline" in errors[0].reason
    assert events[-1].tokens == 10 and events[-1].delegate_errors == len(errors)
    # Without help the tokens are the SLM's own: the same as with the gate never firing.
    plain = lacy.generate(PROMPT, max_tokens=10, gate=GateConfig(mode="call", call_threshold=1.0))
    assert "".join(output_text(e) for e in events) == plain.text


def test_callback_timeout_is_reported_and_decoding_goes_on(tiny):
    def slow(ctx):
        time.sleep(1.5)
        return "too late"

    lacy = lacy_mlx.load(tiny, delegate=CallbackDelegate(slow, timeout_s=0.05, name="slow"),
                         gate=GateConfig(mode="entropy", entropy_threshold=0.0, max_calls=2))
    events = _events(lacy, n=8)
    errors = [e for e in events if isinstance(e, DelegateError)]
    assert [e.error for e in errors] == ["timeout", "timeout"] and errors[0].delegate == "slow"
    assert "0.05" in errors[0].reason and events[-1].tokens == 8


def test_callback_results_of_every_shape(tiny):
    cases = {
        "str": lambda ctx: "Turing was born in London.",
        "list": lambda ctx: ["London.", "1912."],
        "none": lambda ctx: None,
        "bad": lambda ctx: 42,
    }
    lacy = lacy_mlx.load(tiny, gate=GateConfig(mode="entropy", entropy_threshold=0.0, max_calls=1))
    for name, fn in cases.items():
        lacy.delegate = CallbackDelegate(fn, name=name)
        events = _events(lacy, n=4)
        evid = [e for e in events if isinstance(e, Evidence)]
        errors = [e for e in events if isinstance(e, DelegateError)]
        if name in ("str", "list"):
            assert evid and evid[0].sources == (name,) and not errors
        else:
            assert errors and errors[0].error == ("empty" if name == "none" else "TypeError")
    cont = CallbackDelegate(lambda ctx: " London", kind="continuation", name="oracle")
    lacy.delegate = cont
    events = _events(lacy, n=6)
    delegate_tokens = [e for e in events if isinstance(e, Token) and e.source == "delegate"]
    assert delegate_tokens and "".join(t.text for t in delegate_tokens).strip() == "London"


class _Recording(ModelDelegate):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.contexts = []

    def __call__(self, ctx):
        self.contexts.append(ctx)
        return super().__call__(ctx)


def test_model_delegate_cascade_reuses_its_cache(tiny, helper_dir):
    hm, ht = mlx_lm.load(str(helper_dir))
    helper = _Recording(hm, ht, max_words=1, max_tokens=6, name="helper")
    lacy = lacy_mlx.load(tiny, delegate=helper, gate=GateConfig(mode="entropy", entropy_threshold=0.0, min_gap=3))
    events = _events(lacy, n=24)
    evid = [e for e in events if isinstance(e, Evidence)]
    assert len(evid) >= 2 and all(e.kind == "continuation" and e.injection == "append" for e in evid)
    assert any(isinstance(e, Token) and e.source == "delegate" for e in events)
    # Each span equals what a fresh helper (no cache) writes for the same text (the last one may be
    # cut where max_tokens ends the answer: the event carries what was appended).
    for i, (ctx, ev) in enumerate(zip(helper.contexts, evid)):
        fresh = ModelDelegate(hm, ht, max_words=1, max_tokens=6)(ctx)
        assert fresh.text == ev.text or (i == len(evid) - 1 and fresh.text.startswith(ev.text))
    assert helper.reused_tokens > 0
    assert helper.prefilled_tokens < sum(len(ht.encode(c.full_text)) for c in helper.contexts)
    assert helper.cache[0].offset == len(helper.cached_ids)


def test_model_delegate_span_is_one_word(tiny, helper_dir):
    hm, ht = mlx_lm.load(str(helper_dir))
    md = ModelDelegate(hm, ht, max_words=1, max_tokens=8)
    assert md._span(" Warsaw") is None and md._span(" Warsaw in") == " Warsaw"
    assert md._span(" 1867.") == " 1867" and md._span(", and") == ","
    two = ModelDelegate(hm, ht, max_words=2)
    assert two._span(" New York is") == " New York"
    ctx = CallContext(0, "Marie Curie was born in", "", "")
    out = md(ctx)
    ids = ht.encode(ctx.full_text)
    toks = [t for t, _ in zip((t for t, _ in generate_step(mx.array(ids), hm, max_tokens=8)), range(8))]
    assert ht.decode(toks).startswith(out.text)


def test_text_queries_search_hybrid_and_min_score_reads_the_cosine(store):
    ctx = CallContext(0, "", "When was Marie Curie born? 1867", "", sentence_tokens=("1867",), sentence_confidence=(1.0,))
    default = RetrievalDelegate(store, k=3)(ctx)
    assert default.hits[0].external_id == "curie"
    assert all(h.cosine is not None and h.bm25 is not None for h in default.hits[:1])  # hybrid: both rankings
    keyword = RetrievalDelegate(store, k=3, mode="keyword", min_score=0.99)(ctx)
    assert [h.external_id for h in keyword.hits] == ["curie"]  # no cosine in keyword mode: min_score keeps it
    strict = RetrievalDelegate(store, k=3, mode="vector", min_score=0.99)(ctx)
    assert strict.hits == ()
