"""What a delegate receives at a call, what it returns, and how the runtime runs it safely.

A delegate is any object with a ``name`` and ``__call__(ctx: CallContext) -> Help | None``.
Returning None (or an empty :class:`Help`) means "nothing found". Exceptions never escape
:func:`run_delegate`: the runtime turns them into a ``DelegateError`` event and decodes on.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import mlx.core as mx

from lacy_mlx.runtime.kinds import HelpKind
from lacy_mlx.tokens import format_evidence

if TYPE_CHECKING:
    from lacy_mlx.store.records import SearchHit

T = TypeVar("T")
A = TypeVar("A")


@dataclass(frozen=True)
class CallContext:
    """The state of the generation at a call.

    ``prompt``: the prompt text as the SLM saw it (chat template applied). ``question``: the last
    user message (or the raw prompt). ``text``: output text so far. ``sentence_tokens`` and
    ``sentence_confidence``: the current sentence's output tokens (text pieces) and the gate's
    top-1 probability at each. ``hidden``: the SLM's last hidden state ``(H,)`` at the call, when
    the runtime kept it (latent queries). ``entropy``/``p_call``: the gate's scores at the call.
    """

    step: int
    prompt: str
    question: str
    text: str
    sentence_tokens: tuple[str, ...] = ()
    sentence_confidence: tuple[float, ...] = ()
    hidden: mx.array | None = None
    entropy: float = 0.0
    p_call: float = 0.0

    @property
    def full_text(self) -> str:
        """Prompt and output so far: what a model delegate continues."""
        return self.prompt + self.text


@dataclass(frozen=True)
class Help:
    """A delegate's answer.

    ``kind``: ``evidence`` (passages the SLM reads; injected inline or into the prompt) or
    ``continuation`` (text appended to the output, e.g. the next word from a bigger model).
    ``passages``: the evidence as separate passages (prefix injection numbers them); ``text``
    defaults to them in the evidence format training uses (:func:`lacy_mlx.tokens.format_evidence`). ``sources``: names shown to the user (document titles,
    external ids, a model name). ``query``/``hits``: what retrieval searched and found.
    """

    kind: HelpKind = "evidence"
    text: str = ""
    passages: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    query: str | None = None
    hits: tuple[SearchHit, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("evidence", "continuation"):
            raise ValueError(f"Help.kind must be 'evidence' or 'continuation', got {self.kind!r}")
        if not self.text and self.passages:
            object.__setattr__(self, "text", format_evidence(self.passages))
        if not self.passages and self.text and self.kind == "evidence":
            object.__setattr__(self, "passages", (self.text,))

    @property
    def empty(self) -> bool:
        return not self.text.strip()


@runtime_checkable
class Delegate(Protocol):
    """The delegate interface: a ``name`` and ``__call__(ctx) -> Help | None``.

    Contract: called on the thread that iterates the generation, once per call, with the
    generation paused; return None or an empty :class:`Help` for "nothing found"; exceptions are
    caught (a ``DelegateError`` event) and never end the generation. Optional attributes the
    runtime reads: ``kind`` (``retrieval``, ``model`` or ``callback``: which timer it counts
    towards) and ``needs_hidden`` (True when it reads ``ctx.hidden``: the decoder keeps it).
    """

    name: str

    def __call__(self, ctx: CallContext) -> Help | None: ...


@dataclass
class Outcome:
    """The result of running a delegate once: ``help`` or a failure ``reason`` / ``error``."""

    help: Help | None
    seconds: float
    reason: str = ""
    error: str = ""
    query: str | None = None
    hits: tuple[SearchHit, ...] = field(default_factory=tuple)


# Events carry a delegate's query and error text; a delegate can make either arbitrarily long.
MAX_EVENT_CHARS = 1000


def clip(text: str | None, n: int = MAX_EVENT_CHARS) -> str | None:
    """``text`` cut to ``n`` characters (an ellipsis marks the cut); None stays None."""
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def run_delegate(delegate: Delegate, ctx: CallContext) -> Outcome:
    """Run ``delegate`` on ``ctx``; never raises (except KeyboardInterrupt and other BaseExceptions).

    The outcome's ``reason`` and ``query`` are cut to :data:`MAX_EVENT_CHARS` characters.
    """
    t0 = time.perf_counter()
    try:
        help_ = delegate(ctx)
    except DelegateTimeout as exc:
        return Outcome(None, time.perf_counter() - t0, clip(str(exc)) or "", "timeout")
    except Exception as exc:  # a delegate's bug must not end the generation
        return Outcome(None, time.perf_counter() - t0, clip(f"{type(exc).__name__}: {exc}") or "",
                       type(exc).__name__)
    dt = time.perf_counter() - t0
    if help_ is None or help_.empty:
        q = help_.query if help_ is not None else None
        hits = help_.hits if help_ is not None else ()
        return Outcome(None, dt, "the delegate found nothing to add", "empty", clip(q), hits)
    return Outcome(help_, dt, query=clip(help_.query), hits=help_.hits)


class DelegateTimeout(Exception):
    """A delegate did not answer within its timeout."""


def call_with_timeout(fn: Callable[[A], T], arg: A, timeout_s: float | None, what: str) -> T:
    """``fn(arg)`` in a daemon thread, waiting at most ``timeout_s`` seconds (None: no limit).

    A thread that overruns is abandoned, not killed (Python cannot kill threads): it finishes in
    the background and its result is dropped. Being a daemon, it never blocks interpreter exit.
    """
    if timeout_s is None:
        return fn(arg)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn(arg)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"lacy-delegate-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise DelegateTimeout(f"{what} did not answer within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")  # type: ignore[return-value]
