"""`lacy-mlx serve` driven by the official openai client: chat and completions, streaming and
not, usage, embeddings, models, lacy's extra fields, and errors as the client's exception types."""
import threading

import numpy as np
import openai
import pytest
from server_fixtures import calling_lacy, occupy, running

import lacy_mlx

MSGS = [{"role": "user", "content": "Where was Marie Curie born?"}]


def client(server, key="unused", **kw):
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, **kw)


def test_chat_matches_the_library(plain_server, tiny_dir):
    c = client(plain_server)
    r = c.chat.completions.create(model=plain_server.model_id, messages=MSGS, max_tokens=12)
    ref = lacy_mlx.load(str(tiny_dir)).generate(MSGS, max_tokens=12)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content == ref.text and msg.annotations == []
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == ref.stats.prompt_tokens and r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12
    assert r.model_extra["lacy"]["stats"]["steps"] == 12


def test_chat_stream_shapes_and_usage(plain_server):
    c = client(plain_server)
    model = plain_server.model_id
    whole = c.chat.completions.create(model=model, messages=MSGS, max_tokens=10).choices[0].message.content
    chunks = list(c.chat.completions.create(model=model, messages=MSGS, max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}))
    assert len({ch.id for ch in chunks}) == 1 and len({ch.created for ch in chunks}) == 1
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    final, usage = chunks[-2], chunks[-1]
    assert final.choices[0].finish_reason == "length" and "lacy" in final.model_extra
    assert usage.choices == [] and usage.usage.completion_tokens == 10
    assert all(ch.usage is None for ch in chunks[:-1])
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks[:-1]) == whole
    # without include_usage: no usage chunk at all
    plain = list(c.chat.completions.create(model=model, messages=MSGS, max_tokens=4, stream=True))
    assert plain[-1].choices[0].finish_reason == "length" and all(ch.choices for ch in plain)


def test_completions_stream_and_not(plain_server, tiny_dir):
    c = client(plain_server)
    model = plain_server.model_id
    ref = lacy_mlx.load(str(tiny_dir)).generate("Marie Curie was born in", max_tokens=8).text
    r = c.completions.create(model=model, prompt="Marie Curie was born in", max_tokens=8)
    assert r.object == "text_completion" and r.choices[0].text == ref and r.choices[0].finish_reason == "length"
    parts = list(c.completions.create(model=model, prompt="Marie Curie was born in", max_tokens=8, stream=True))
    assert "".join(p.choices[0].text for p in parts) == ref
    assert parts[-1].choices[0].finish_reason == "length"


def test_logprobs_chat_and_completions(plain_server, tiny_dir):
    c = client(plain_server)
    model = plain_server.model_id
    ref = [e for e in lacy_mlx.load(str(tiny_dir)).stream(MSGS, max_tokens=6, logprobs=2)
           if isinstance(e, lacy_mlx.Token)]
    r = c.chat.completions.create(model=model, messages=MSGS, max_tokens=6, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert [round(x.logprob, 4) for x in content] == [round(t.logprob, 4) for t in ref]
    assert all(len(x.top_logprobs) == 2 and x.top_logprobs[0].logprob >= x.top_logprobs[1].logprob for x in content)
    assert c.chat.completions.create(model=model, messages=MSGS, max_tokens=2).choices[0].logprobs is None
    streamed = list(c.chat.completions.create(model=model, messages=MSGS, max_tokens=6, logprobs=True, stream=True))
    entries = [x for ch in streamed if ch.choices and ch.choices[0].logprobs for x in ch.choices[0].logprobs.content]
    assert [round(x.logprob, 4) for x in entries] == [round(t.logprob, 4) for t in ref]
    comp = c.completions.create(model=model, prompt="Marie Curie was born in", max_tokens=5, logprobs=1)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5


def test_stop_sequence_cuts_the_text(plain_server):
    c = client(plain_server)
    model = plain_server.model_id
    full = c.completions.create(model=model, prompt="Marie Curie was born in", max_tokens=16).choices[0].text
    stop = full[5:8]
    assert stop and full.find(stop) >= 0
    cut = full[: full.find(stop)]
    r = c.completions.create(model=model, prompt="Marie Curie was born in", max_tokens=16, stop=[stop])
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    streamed = list(c.completions.create(model=model, prompt="Marie Curie was born in", max_tokens=16,
                                         stop=stop, stream=True))
    assert "".join(p.choices[0].text for p in streamed) == cut
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_conversation_reuses_the_prompt_cache(plain_server):
    c = client(plain_server)
    model = plain_server.model_id
    first = c.chat.completions.create(model=model, messages=MSGS, max_tokens=6)
    turn2 = MSGS + [{"role": "assistant", "content": first.choices[0].message.content},
                    {"role": "user", "content": "And Alan Turing?"}]
    second = c.chat.completions.create(model=model, messages=turn2, max_tokens=6)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


def test_embeddings_float_and_base64(tiny_dir, tmp_path):
    lacy = calling_lacy(tiny_dir, tmp_path)
    with running(lacy) as server:
        c = client(server)
        texts = ["Marie Curie was born in Warsaw.", "rivers"]
        want = lacy.delegate.store.embedder.embed_batch(texts)
        r = c.embeddings.create(model=server.model_id, input=texts)  # the client asks for base64
        got = np.array([d.embedding for d in r.data], dtype=np.float32)
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert r.model == lacy.delegate.store.embedder.name and r.usage.prompt_tokens > 0
        f = c.embeddings.create(model=lacy.delegate.store.embedder.name, input="rivers", encoding_format="float")
        np.testing.assert_allclose(np.array(f.data[0].embedding), want[1], atol=1e-6)


def test_models_list_and_retrieve(plain_server):
    c = client(plain_server)
    ids = [m.id for m in c.models.list().data]
    assert ids[0] == plain_server.model_id
    assert c.models.retrieve(plain_server.model_id).owned_by == "lacy-mlx"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-4o")


@pytest.mark.parametrize("extra, param", [
    ({"n": 2}, "n"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({"max_tokens": 10**6}, "max_tokens"),
    ({"temperature": 5}, "temperature"),
    ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ({"extra_body": {"lacy": {"gate": "sometimes"}}}, "lacy.gate"),
    ({"extra_body": {"lacy": {"threshold": 1}}}, "lacy.threshold"),
])
def test_unsupported_parameters_are_400(plain_server, extra, param):
    c = client(plain_server)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model=plain_server.model_id, messages=MSGS, **{"max_tokens": 4, **extra})
    assert err.value.body["param"] == param
    assert err.value.body["type"] == "invalid_request_error"


def test_unknown_model_is_404(plain_server):
    with pytest.raises(openai.NotFoundError) as err:
        client(plain_server).chat.completions.create(model="gpt-4o", messages=MSGS)
    assert err.value.body["code"] == "model_not_found"


def test_api_key(tiny_dir):
    with running(lacy_mlx.load(str(tiny_dir)), api_key="s3cret") as server:
        with pytest.raises(openai.AuthenticationError):
            client(server, key="wrong").models.list()
        assert client(server, key="s3cret").models.list().data


def test_queue_full_is_429(plain_server):
    release = threading.Event()
    try:
        occupy(plain_server, release, waiting=plain_server.config.queue_size)
        with pytest.raises(openai.RateLimitError) as err:
            client(plain_server).chat.completions.create(model=plain_server.model_id, messages=MSGS, max_tokens=2)
        assert err.value.body["code"] == "queue_full"
    finally:
        release.set()


def test_calls_ride_in_annotations_and_the_lacy_object(tiny_dir, tmp_path):
    lacy = calling_lacy(tiny_dir, tmp_path)
    with running(lacy) as server:
        c = client(server)
        r = c.chat.completions.create(model=server.model_id, messages=MSGS, max_tokens=12)
        calls = r.model_extra["lacy"]["calls"]
        assert calls and calls[0]["reason"] == "call" and calls[0]["hits"]
        assert calls[0]["evidence"]["injection"] == "inline"
        ann = r.choices[0].message.annotations
        assert ann and ann[0].type == "url_citation"
        urls = {a.url_citation.url for a in ann}
        assert urls <= {"file:///docs/curie.md"} | {h["url"] for c_ in calls for h in c_["hits"]}
        # streamed: the same calls on the final chunk
        chunks = list(c.chat.completions.create(model=server.model_id, messages=MSGS, max_tokens=12, stream=True))
        assert [x["step"] for x in chunks[-1].model_extra["lacy"]["calls"]] == [x["step"] for x in calls]
        # lacy options: retrieval off, or the gate off, means no calls
        for opts in ({"retrieval": False}, {"gate": "off"}):
            r2 = c.chat.completions.create(model=server.model_id, messages=MSGS, max_tokens=6, extra_body={"lacy": opts})
            assert r2.model_extra["lacy"]["calls"] == []
        r3 = c.chat.completions.create(model=server.model_id, messages=MSGS, max_tokens=6, extra_body={"lacy": {"k": 1}})
        assert all(len(c_["hits"]) <= 1 for c_ in r3.model_extra["lacy"]["calls"])


class _Flaky:
    """A model that fails on its ``fail_at``-th forward pass (a generation that breaks mid-way)."""

    def __init__(self, model, fail_at):
        self.model, self.fail_at, self.n = model, fail_at, 0
        self.layers = model.layers

    def __call__(self, *args, **kwargs):
        self.n += 1
        if self.n == self.fail_at:
            raise RuntimeError("the device went away")
        return self.model(*args, **kwargs)


def test_mid_stream_failure_sends_an_error_event(tiny):
    model, tok = tiny
    lacy = lacy_mlx.load((_Flaky(model, fail_at=12), tok), gate=lacy_mlx.GateConfig(mode="off"))
    with running(lacy) as server:
        c = client(server)
        with pytest.raises(openai.APIError, match="device went away"):
            for _ in c.completions.create(model=server.model_id, prompt="Marie", max_tokens=40, stream=True):
                pass
        # the server survives and answers the next request (the cache was dropped)
        lacy.model.fail_at = -1
        assert c.completions.create(model=server.model_id, prompt="Marie", max_tokens=3).choices[0].text is not None
