"""Answer a question set through the runtime and score it: the cascade as users run it.

Three ways to answer, all :meth:`lacy_mlx.Lacy.generate` on the same model and store:

- ``alone``: the gate off and no retrieval (the model's own knowledge);
- ``first``: retrieval with the question before every answer, then the gate off;
- ``gate``: the gate decides (entropy or p(<CALL>), a threshold or a call budget); each call
  retrieves with the runtime's text query and regenerates the sentence with the passages.

The scorer is :mod:`lacy_mlx.qa` (exact answer match); a call counts every delegate run,
the ``first`` retrieval included.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lacy_mlx.errors import InputError
from lacy_mlx.qa import Question
from lacy_mlx.runtime.events import call_rate

Mode = Literal["alone", "first", "gate"]
MODES: tuple[Mode, ...] = ("alone", "first", "gate")


@dataclass(frozen=True)
class Answer:
    """One generated answer and how it came about."""

    question: Question
    text: str
    correct: bool
    calls: int
    tokens: int
    seconds: float
    sources: tuple[str, ...]


@dataclass(frozen=True)
class QAReport:
    """The answers of one mode, with the settings that produced them."""

    mode: Mode
    settings: dict[str, Any]
    answers: tuple[Answer, ...]

    def summary(self) -> dict[str, Any]:
        """Accuracy, calls per answer, calls per generated token, median seconds per answer."""
        n = len(self.answers)
        calls = sum(a.calls for a in self.answers)
        tokens = sum(a.tokens for a in self.answers)
        return {
            "mode": self.mode, **self.settings, "n": n,
            "accuracy": sum(a.correct for a in self.answers) / n,
            "calls_per_answer": calls / n,
            "answers_with_calls": sum(a.calls > 0 for a in self.answers) / n,
            "call_rate": call_rate(calls, tokens) or 0.0,
            "seconds_per_answer": statistics.median(a.seconds for a in self.answers),
            "missed": [a.question.id for a in self.answers if not a.correct],
        }


def answer_questions(
    lacy: Any,
    questions: Sequence[Question],
    *,
    mode: Mode,
    max_tokens: int = 48,
    max_sentences: int | None = None,
    gate: Any = None,
    progress: Callable[[Answer], None] | None = None,
) -> QAReport:
    """Answer every question as a one-turn chat with ``lacy`` in ``mode``; ``gate`` (a
    :class:`lacy_mlx.GateConfig`) is used in ``gate`` mode (default: ``lacy.gate``). Answers end
    after ``max_tokens`` tokens or ``max_sentences`` sentences."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "alone" and lacy.delegate is None:
        raise InputError(f"mode {mode!r} retrieves: load the model with a store (db=...)")
    off = lacy.gate.with_(mode="off")
    cfg = {"alone": off, "first": off, "gate": gate or lacy.gate}[mode]
    answers = []
    for q in questions:
        t0 = time.perf_counter()
        result = lacy.generate(_prompt(lacy, q.question), max_tokens=max_tokens, gate=cfg,
                               retrieve_first=mode == "first", max_sentences=max_sentences)
        answer = Answer(q, result.text, q.matches(result.text), len(result.calls), result.stats.tokens,
                        time.perf_counter() - t0, tuple(result.sources))
        answers.append(answer)
        if progress is not None:
            progress(answer)
    settings = {} if mode != "gate" else _gate_settings(cfg)
    return QAReport(mode, settings, tuple(answers))


def _prompt(lacy: Any, question: str) -> Any:
    """A chat turn when the tokenizer has a template, else the bare question."""
    if getattr(lacy.tokenizer, "chat_template", None) or getattr(lacy.tokenizer, "has_chat_template", False):
        return [{"role": "user", "content": question}]
    return question


def _gate_settings(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"gate": cfg.mode}
    if cfg.budget is not None:
        out["budget"] = cfg.budget
    elif cfg.mode in ("entropy", "either"):
        out["entropy_threshold"] = cfg.entropy_threshold
    if cfg.mode in ("call", "either") and cfg.budget is None:
        out["call_threshold"] = cfg.call_threshold
    if cfg.per_sentence is not None:
        out["per_sentence"] = cfg.per_sentence
    return out


def table(summaries: Iterable[dict[str, Any]]) -> str:
    """A Markdown table of summaries (one row per mode / setting)."""
    rows = ["| mode | setting | accuracy | calls per answer | answers with a call | s per answer |",
            "|---|---|---|---|---|---|"]
    for s in summaries:
        setting = ", ".join(f"{k}={v}" for k, v in s.items() if k in ("entropy_threshold", "budget", "call_threshold",
                                                                         "per_sentence"))
        rows.append(f"| {s['mode']} | {setting or '-'} | {s['accuracy']:.3f} ({round(s['accuracy'] * s['n'])}/{s['n']}) "
                    f"| {s['calls_per_answer']:.2f} | {s['answers_with_calls']:.2f} | {s['seconds_per_answer']:.1f} |")
    return "\n".join(rows)
