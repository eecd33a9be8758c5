"""``lacy-mlx chat --model M [--db FILE]``: a streaming REPL; calls inline, sources after each answer.

Slash commands change the gate between turns: ``/gate MODE``, ``/threshold [call|entropy] [VALUE]``,
``/budget SHARE|off``, ``/stats``, ``/reset``, ``/help``, ``/quit``. Ctrl-C stops the answer being
written and returns to the prompt; Ctrl-C at the prompt (or Ctrl-D) leaves.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from lacy_mlx.cli.runtime_options import (
    EventPrinter,
    add_gate_options,
    add_model_options,
    add_prompt_options,
    add_sampling_options,
    build_lacy,
    sampling,
    stats_line,
)
from lacy_mlx.cli import cli_words
from lacy_mlx.cli.terminal import inert
from lacy_mlx.errors import LacyError
from lacy_mlx.runtime.events import output_text

HELP = """commands:
  /gate MODE                 call | entropy | either | off
  /threshold [call|entropy] [V]  show or set a threshold (default: the current mode's)
  /budget SHARE|off          target share of tokens that call, e.g. 0.2
  /stats                     statistics of the last answer and the session
  /reset                     forget the conversation
  /help                      this text
  /quit                      leave (Ctrl-D, or Ctrl-C at the prompt)
Ctrl-C while an answer streams stops it and keeps what was written."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a model in the terminal",
        description="A streaming chat REPL: calls show inline, sources after each answer. Type /help for "
        "commands. Models without a chat template get plain 'User: ...' / 'Assistant:' lines. Ctrl-C stops "
        "an answer; at the prompt it leaves.",
    )
    add_model_options(p)
    add_prompt_options(p)
    add_gate_options(p)
    add_sampling_options(p)
    p.set_defaults(func=run)


class ChatSession:
    """Conversation state and the slash commands; ``out`` receives everything printed."""

    def __init__(self, lacy: Any, args: argparse.Namespace, out: Any) -> None:
        self.lacy = lacy
        self.args = args
        self.out = out
        self.printer = EventPrinter(out)
        self.system = getattr(args, "system_prompt", None)
        self.history: list[dict[str, str]] = []
        self.last = None
        self.totals = {"answers": 0, "tokens": 0, "calls": 0}

    def say(self, text: str) -> None:
        self.out.write(inert(text) + "\n")
        self.out.flush()

    def command(self, line: str) -> bool:
        """Run a slash command; False when the session should end."""
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        try:
            if name in ("quit", "exit", "q"):
                return False
            if name == "help":
                self.say(HELP)
            elif name == "gate":
                self.lacy.gate = self.lacy.gate.with_(mode=rest)
                self.say(f"gate mode: {self.lacy.gate.mode}")
            elif name == "threshold":
                self._threshold(rest)
            elif name == "budget":
                self.lacy.gate = _set_budget(self.lacy.gate, rest)
                self.say(f"budget: {self.lacy.gate.budget or 'off'}")
            elif name == "stats":
                self._stats()
            elif name == "reset":
                self.history = []
                self.say("conversation cleared")
            else:
                self.say(f"unknown command /{name}; /help lists them")
        except (LacyError, ValueError) as exc:
            self.say(f"error: {cli_words(str(exc))}")
        return True

    def _threshold(self, rest: str) -> None:
        parts = rest.split()
        gate = self.lacy.gate
        default = "entropy" if gate.mode == "entropy" else "call"
        which = parts[0] if parts and parts[0] in ("call", "entropy") else default
        values = parts[1:] if parts and parts[0] in ("call", "entropy") else parts
        if len(values) > 1:
            raise ValueError("usage: /threshold [call|entropy] [VALUE]")
        if not values:  # show it
            self.say(f"{which} threshold: {getattr(gate, f'{which}_threshold'):g}")
            return
        value = float(values[0])
        self.lacy.gate = gate.with_(**{f"{which}_threshold": value})
        self.say(f"{which} threshold: {value:g}")

    def _stats(self) -> None:
        g = self.lacy.gate
        self.say(f"gate: mode {g.mode}, call >= {g.call_threshold:g}, entropy >= {g.entropy_threshold:g} nats, "
                 f"budget {g.budget or 'off'}, injection {self.lacy.injection}, "
                 f"delegate {getattr(self.lacy.delegate, 'name', 'none')}")
        if self.last is not None:
            self.say("last answer: " + stats_line(self.last))
        t = self.totals
        self.say(f"session: {t['answers']} answers, {t['tokens']} tokens, {t['calls']} calls")

    def answer(self, text: str) -> None:
        """Stream one answer; the conversation (chat template, or plain lines without one) keeps it.

        Ctrl-C stops the answer: what was written so far stays in the history.
        """
        self.history.append({"role": "user", "content": text})
        system = [{"role": "system", "content": self.system}] if self.system else []
        parts: list[str] = []
        done = None
        try:
            for ev in self.lacy.stream(system + self.history, max_tokens=self.args.max_tokens,
                                       sampling=sampling(self.args)):
                self.printer.event(ev)
                parts.append(output_text(ev))
                if type(ev).__name__ == "Done":
                    done = ev
        except LacyError as exc:
            self.history.pop()
            self.say(f"\nerror: {cli_words(str(exc))}")
            return
        except KeyboardInterrupt:
            self.printer.end()
            self.say("[stopped]")
        else:
            self.printer.end()
        self.history.append({"role": "assistant", "content": "".join(parts)})
        self.totals["answers"] += 1
        if done is not None:
            self.last = done
            self.totals["tokens"] += done.tokens
            self.totals["calls"] += done.calls


def _set_budget(gate: Any, value: str) -> Any:
    from dataclasses import replace

    if value in ("off", "none", "0", ""):
        return replace(gate, budget=None)
    return gate.with_(budget=float(value))


def run(args: argparse.Namespace) -> int:
    sampling(args)  # invalid settings fail before the model loads
    lacy = build_lacy(args)
    lacy.reuse_prompt_cache = True  # each turn extends the last: prefill only the new messages
    session = ChatSession(lacy, args, sys.stdout)
    interactive = sys.stdin.isatty()
    session.say(f"lacy-mlx chat with {lacy.name} (gate {lacy.gate.mode}, injection {lacy.injection}); /help for commands")
    while True:
        try:
            line = _read_line(interactive)
        except KeyboardInterrupt:  # Ctrl-C at the prompt leaves (during an answer it only stops that)
            session.say("")
            break
        if line is None:  # EOF (Ctrl-D)
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not session.command(line):
                break
            continue
        session.answer(line)
    return 0


def _read_line(interactive: bool) -> str | None:
    """One line of input: ``input()`` on a terminal (line editing), plain reads from a pipe."""
    if interactive:
        try:
            import readline  # noqa: F401  (gives input() history and editing)
        except ImportError:
            pass
        try:
            return input(">>> ")
        except EOFError:
            return None
    line = sys.stdin.readline()
    return line if line else None
