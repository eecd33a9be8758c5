"""Runtime and generate/chat failures found by trying them as a new user and as an attacker (issue 19)."""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import mlx.core as mx
import mlx_lm
import pytest
from mlx_lm.generate import generate_step
from runtime_models import boost_call, build_model, vocab_of

import lacy_mlx
from lacy_mlx.cli import main
from lacy_mlx.cli.chat import ChatSession
from lacy_mlx.cli.runtime_options import EventPrinter
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import InputError
from lacy_mlx.query_tower import QueryTower
from lacy_mlx.runtime import (
    CallbackDelegate,
    CallContext,
    DelegateError,
    Done,
    Evidence,
    GateConfig,
    ModelDelegate,
    RetrievalDelegate,
    Sampling,
    Token,
)
from lacy_mlx.runtime.inject import encode_prompt
from lacy_mlx.store import Store

ALWAYS = GateConfig(mode="entropy", entropy_threshold=0.0, max_calls=2)


def _run(lacy, prompt="Alan Turing was born in", **kw):
    return list(lacy.stream(prompt, **kw))


# ---- sampling and length ----------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{"temp": -1}, {"temp": float("nan")}, {"top_p": 2}, {"top_p": -0.1},
                                {"min_p": 1.5}, {"top_k": -1}, {"top_k": 2.5}, {"seed": -3}, {"temp": "hot"}])
def test_invalid_sampling_is_refused(kw):
    with pytest.raises(InputError, match=next(iter(kw))):
        Sampling(**kw)


@pytest.mark.parametrize("flags", [["--temp", "-1"], ["--top-p", "2"]])
def test_cli_refuses_invalid_sampling_before_loading(tmp_path, capsys, flags):
    rc = main(["generate", "--model", str(tmp_path / "not-loaded"), "--prompt", "hi", *flags])
    err = capsys.readouterr().err
    assert rc == 1 and ("temp" in err or "top_p" in err) and "cannot load the model" not in err


@pytest.fixture
def short_context(tiny):
    """The tiny model with a 48-position context (its config states 4096)."""
    model, tok = tiny
    old = model.args.max_position_embeddings
    model.args.max_position_embeddings = 48
    yield model, tok
    model.args.max_position_embeddings = old


def test_prompt_past_the_context_is_refused(short_context):
    lacy = lacy_mlx.load(short_context, gate=GateConfig(mode="off"))
    assert lacy.max_context == 48
    with pytest.raises(InputError, match=r"reads at most 48 .*shorten the prompt"):
        _run(lacy, "Marie Curie was born in Warsaw. " * 10)


def test_generation_stops_when_the_context_is_full(short_context):
    long_help = CallbackDelegate(lambda ctx: "Alan Turing was born in London in 1912. " * 20)
    for delegate, gate in ((None, GateConfig(mode="off")), (long_help, ALWAYS)):
        lacy = lacy_mlx.load(short_context, delegate=delegate, gate=gate)
        events = _run(lacy, max_tokens=200)
        done = events[-1]
        assert isinstance(done, Done) and done.finish_reason in ("length", "stop")
        assert len(done.context) <= 48 and done.tokens < 48


# ---- a delegate's huge answer -----------------------------------------------------------------


def test_huge_delegate_answer_is_bounded_before_tokenizing(tiny):
    from lacy_mlx.runtime.inject import CHARS_PER_TOKEN_BOUND

    model, tok = tiny
    huge = "London " * (18_000_000 // 7)
    seen: list[int] = []

    class Spy:
        """The tokenizer, recording how many characters each encode call gets."""

        def __init__(self, inner):
            self.inner = inner

        def encode(self, text, *a, **k):
            seen.append(len(text))
            return self.inner.encode(text, *a, **k)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    for kind, injection in (("evidence", "inline"), ("evidence", "prefix"), ("continuation", "auto")):
        seen.clear()
        cb = CallbackDelegate(lambda ctx: huge, kind=kind, name="huge")
        lacy = lacy_mlx.load((model, Spy(tok)), delegate=cb, gate=ALWAYS, injection=injection,
                             max_evidence_tokens=16)
        events = _run(lacy, max_tokens=6)
        evid = [e for e in events if isinstance(e, Evidence)]
        assert evid, kind
        assert max(seen) <= 16 * CHARS_PER_TOKEN_BOUND + 4096, (injection, max(seen))
        for e in evid:
            assert len(e.text) <= 16 * CHARS_PER_TOKEN_BOUND
            assert e.tokens <= 16 + 2 or injection == "prefix"


def test_huge_delegate_error_and_query_are_clipped(tiny):
    def fails(ctx):
        raise RuntimeError("x" * 5_000_000)

    lacy = lacy_mlx.load(tiny, delegate=fails, gate=ALWAYS)
    errors = [e for e in _run(lacy, max_tokens=4) if isinstance(e, DelegateError)]
    assert errors and len(errors[0].reason) <= 1000


# ---- special tokens -------------------------------------------------------------------------


def test_gate_off_never_streams_special_tokens(tiny_dir):
    model, tok = mlx_lm.load(str(tiny_dir))
    specials = vocab_of(tiny_dir)
    boost_call(model, specials["<CALL>"], bias=200.0)  # <CALL> is the argmax at every step
    lacy = lacy_mlx.load((model, tok), gate=GateConfig(mode="off"))
    for sampling in (None, Sampling(temp=1.0, seed=0)):
        tokens = [e for e in _run(lacy, max_tokens=6, sampling=sampling) if isinstance(e, Token)]
        assert tokens and not any(t.id in (specials["<CALL>"], specials["<EVIDENCE>"], specials["</EVIDENCE>"])
                                  for t in tokens)
        assert "<CALL>" not in "".join(t.text for t in tokens)


# ---- chat without a template, history, Ctrl-C ------------------------------------------------------


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory) -> Path:
    """A tiny model whose tokenizer has no chat template."""
    folder = build_model(tmp_path_factory.mktemp("plain-slm"), seed=0)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template")
    cfg_path.write_text(json.dumps(cfg))
    return folder


def test_messages_without_a_template_use_the_plain_format(plain_dir):
    from lacy_mlx.runtime.inject import plain_chat

    model, tok = mlx_lm.load(str(plain_dir))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who was Ada Lovelace?"}]
    p = encode_prompt(tok, msgs)
    assert p.text == "System: Be brief.\nUser: Who was Ada Lovelace?\nAssistant:" == plain_chat(msgs)
    assert p.question == "Who was Ada Lovelace?"
    lacy = lacy_mlx.load((model, tok), gate=GateConfig(mode="off"))
    assert isinstance(_run(lacy, msgs, max_tokens=3)[-1], Done)
    with pytest.raises(InputError, match="string or a list of chat messages"):
        _run(lacy, 42)


def _session(lacy, **kw) -> tuple[ChatSession, io.StringIO]:
    args = argparse.Namespace(max_tokens=3, temp=0.0, top_p=0.0, seed=None, system_prompt=None, **kw)
    out = io.StringIO()
    return ChatSession(lacy, args, out), out


@pytest.mark.parametrize("which", ["plain", "template"])
def test_chat_history_works_with_and_without_a_template(plain_dir, tiny_dir, which):
    model, tok = mlx_lm.load(str(plain_dir if which == "plain" else tiny_dir))
    prompts: list = []
    lacy = lacy_mlx.load((model, tok), gate=GateConfig(mode="off"))
    real = lacy.stream
    lacy.stream = lambda prompt, **kw: (prompts.append(prompt), real(prompt, **kw))[1]
    session, out = _session(lacy)
    session.answer("first question")
    session.answer("second question")
    assert [m["content"] for m in prompts[1] if m["role"] == "user"] == ["first question", "second question"]
    assert prompts[1][1]["role"] == "assistant"
    session.command("/reset")
    session.answer("third")
    assert [m["content"] for m in prompts[2]] == ["third"]


def test_ctrl_c_stops_the_answer_and_the_session_goes_on(tiny):
    calls = []

    def interrupt(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    lacy = lacy_mlx.load(tiny, delegate=CallbackDelegate(interrupt, timeout_s=None), gate=ALWAYS)
    session, out = _session(lacy)
    session.answer("Where was Alan Turing born?")  # must not raise
    assert "[stopped]" in out.getvalue() and session.history[-1]["role"] == "assistant"
    session.answer("And Ada Lovelace?")
    assert session.totals["answers"] == 2 and session.last is not None


def test_ctrl_c_at_the_prompt_leaves(tiny_dir, monkeypatch, capsys):
    from lacy_mlx.cli import chat

    def interrupted(interactive):
        raise KeyboardInterrupt

    monkeypatch.setattr(chat, "_read_line", interrupted)
    assert main(["chat", "--model", str(tiny_dir), "--no-db"]) == 0


def test_threshold_without_a_value_shows_it(tiny):
    lacy = lacy_mlx.load(tiny, gate=GateConfig(mode="call", call_threshold=0.35))
    session, out = _session(lacy)
    session.command("/threshold")
    session.command("/threshold entropy")
    session.command("/threshold call 0.5")
    assert out.getvalue().splitlines() == ["call threshold: 0.35", "entropy threshold: " +
                                           f"{lacy.gate.entropy_threshold:g}", "call threshold: 0.5"]


# ---- query default, CLI words ---------------------------------------------------------------


def test_query_defaults_to_the_models_tower_when_it_fits(tmp_path):
    folder = build_model(tmp_path / "towered", seed=0)
    fits = tmp_path / "fits.db"
    other = tmp_path / "other.db"
    for path, dim in ((fits, 32), (other, 16)):
        with Store.open(path, embedder=HashedEmbedder(dim=dim)) as s:
            s.add_documents(["Alan Turing was born in London."])
    QueryTower(64, 32).save(folder, embedder="hashed-ngram-v1:32")
    assert lacy_mlx.load(str(folder), db=str(fits)).delegate.query_kind == "latent"
    assert lacy_mlx.load(str(folder), db=str(other)).delegate.query_kind == "text"
    assert lacy_mlx.load(str(folder), delegate=RetrievalDelegate(str(fits), query="text")).delegate.query_kind == "text"
    from lacy_mlx.cli import build_parser

    args = build_parser().parse_args(["generate", "--model", "m", "--prompt", "p"])
    assert args.query is None


def test_cli_words_translate_keyword_arguments_to_flags():
    from lacy_mlx.cli import cli_words

    assert cli_words("use query='text' or fast=True") == "use --query text or --fast"
    assert cli_words("give a helper (delegate=...)") == "give a helper (delegate=...)"
    assert cli_words("give a knowledge store (db=...)") == "give a knowledge store (--db ...)"


def test_cli_errors_use_flags(tmp_path, capsys):
    db = tmp_path / "kb.db"
    with Store.open(db, embedder=HashedEmbedder(dim=16)) as s:
        s.add_documents(["text"])
    rc = main(["search", "x", "--db", str(db), "--exact", "--mode", "vector", "-k", "5000"])
    err = capsys.readouterr().err
    assert rc == 1 and "--fast" in err and "fast=True" not in err


def test_no_delegate_message_in_cli_terms(tiny_dir, capsys):
    rc = main(["generate", "--model", str(tiny_dir), "--no-db", "--prompt", "Alan Turing was born in",
               "--raw-prompt", "--max-tokens", "3", "--gate", "entropy", "--entropy-threshold", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and "--db ..." in out and "lacy_mlx.load" not in out


# ---- --prompt -, --system-prompt -----------------------------------------------------------------


def _done(capsys) -> dict:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()][-1]


def test_prompt_from_stdin(tiny_dir, tiny, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Alan Turing was born in\n"))
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "-", "--raw-prompt", "--max-tokens", "2",
                 "--json", "--gate", "off"]) == 0
    assert _done(capsys)["prompt_tokens"] == len(tiny[1].encode("Alan Turing was born in"))
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "-"]) == 1
    assert "prompt is empty" in capsys.readouterr().err


def test_system_prompt(tiny_dir, tiny, capsys):
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--system-prompt", "Be brief.",
                 "--max-tokens", "2", "--json", "--gate", "off"]) == 0
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert _done(capsys)["prompt_tokens"] == len(tiny[1].apply_chat_template(msgs, add_generation_prompt=True))


# ---- terminal escapes ---------------------------------------------------------------------------

EVIL = "safe\x1b[2J\x1b]0;pwned\x07 text\u202e"


def test_event_printer_makes_untrusted_text_inert():
    out = io.StringIO()
    printer = EventPrinter(out, color=True)
    printer.event(Token(EVIL, 1, 0))
    printer.event(Token(EVIL, 1, 0, source="delegate"))
    printer.event(Evidence(0, EVIL, "evidence", "inline", (EVIL,), 3))
    printer.event(DelegateError(0, "cb", EVIL, "x"))
    printer.end()
    text = out.getvalue()
    ours = text.replace("\x1b[0m", "").replace("\x1b[2m", "").replace("\x1b[32m", "").replace("\x1b[31m", "")
    ours = ours.replace("\x1b[36m", "")
    assert "\x1b" not in ours and "\x07" not in ours and "\u202e" not in ours
    assert "\\x1b[2J" in text


def test_search_and_store_list_are_inert_json_exact(tmp_path, capsys):
    db = tmp_path / "kb.db"
    with Store.open(db, embedder=HashedEmbedder(dim=16)) as s:
        s.add_documents([{"id": "evil\x1b]0;t\x07", "title": EVIL, "text": EVIL + " more words"}])
    for argv in (["search", "safe text", "--db", str(db)], ["search", "safe text", "--db", str(db), "--full"],
                 ["store", "list", "--db", str(db)], ["store", "show", "evil\x1b]0;t\x07", "--db", str(db)]):
        assert main(argv) == 0, argv
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, argv
    assert main(["search", "safe text", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == EVIL + " more words"


# ---- the model delegate's text ----------------------------------------------------------------


def test_model_delegate_joins_its_text_as_the_tokens_spell_it(tmp_path):
    folder = build_model(tmp_path / "helper", seed=1, layers=3, lacy_section=False)
    hm, ht = mlx_lm.load(str(folder))
    md = ModelDelegate(hm, ht, max_words=1, max_tokens=8)
    text = "Marie Curie was born in"
    spaced = 0
    for _ in range(4):  # consecutive calls on one delegate (its cache and state carry over)
        out = md(CallContext(0, text, "", ""))
        ids = ht.encode(text)
        toks = [t for t, _ in zip((t for t, _ in generate_step(mx.array(ids), hm, max_tokens=8)), range(8))]
        truth = ht.decode(ids + toks)
        assert truth.startswith(ht.decode(ids) + out.text), (text, out.text)
        spaced += out.text.startswith(" ")
        text += out.text
    assert spaced  # this seed writes a word after a space: the space must be kept


# ---- training config -------------------------------------------------------------------------


@pytest.mark.parametrize("setting, match", [("steps=abc", "steps must be a whole number"),
                                            ("steps=-5", "steps must be at least 1"),
                                            ("lr=0", "lr must be greater than 0"),
                                            ("progress=3", "progress must be true or false"),
                                            ("copy_fraction=2", "copy_fraction must be between 0 and 1")])
def test_train_set_values_are_validated(tmp_path, capsys, setting, match):
    rc = main(["train", "--preset", "tiny", "--out", str(tmp_path / "run"), "--set", setting])
    err = capsys.readouterr().err
    assert rc == 1 and match in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_readme_stream_of_messages_runs_on_the_demo_model():
    """The README's `lacy.stream([{"role": "user", ...}])` on the bundled model (no chat template)."""
    demo = Path(lacy_mlx.__file__).parent / "data" / "demo-model"
    lacy = lacy_mlx.load(str(demo))
    events = list(lacy.stream([{"role": "user", "content": "Who was Ada Lovelace?"}], max_tokens=8))
    assert isinstance(events[-1], Done) and events[-1].prompt_tokens > 0
