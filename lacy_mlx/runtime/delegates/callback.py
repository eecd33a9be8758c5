"""Callback delegate: a function of the host app answers calls, within a timeout.

The function gets the :class:`~lacy_mlx.runtime.delegates.base.CallContext` and returns a string,
a list of strings (passages), a :class:`~lacy_mlx.runtime.delegates.base.Help`, or None. It runs in
a daemon thread; past ``timeout_s`` the runtime stops waiting (a ``DelegateError`` event with
``error="timeout"``) and decodes on. The abandoned call finishes in the background.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lacy_mlx.errors import InputError
from lacy_mlx.runtime.delegates.base import CallContext, Help, call_with_timeout
from lacy_mlx.runtime.kinds import DelegateKind, HelpKind


class CallbackDelegate:
    """Wrap ``fn(ctx)`` as a delegate.

    ``kind``: whether plain strings it returns are ``evidence`` (read by the SLM) or a
    ``continuation`` (appended to the output). ``timeout_s``: None waits forever.
    """

    kind: DelegateKind = "callback"
    needs_hidden = False

    def __init__(
        self,
        fn: Callable[[CallContext], Any],
        *,
        timeout_s: float | None = 5.0,
        kind: HelpKind = "evidence",
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise InputError(f"the callback must be callable, got {type(fn).__name__}")
        if kind not in ("evidence", "continuation"):
            raise InputError(f"kind must be 'evidence' or 'continuation', got {kind!r}")
        if timeout_s is not None and timeout_s <= 0:
            raise InputError(f"timeout_s must be positive or None, got {timeout_s}")
        self.fn = fn
        self.timeout_s = timeout_s
        self.result_kind = kind
        self.name = name or getattr(fn, "__name__", "callback")

    def __call__(self, ctx: CallContext) -> Help | None:
        out = call_with_timeout(self.fn, ctx, self.timeout_s, f"callback {self.name!r}")
        return self._to_help(out)

    def _to_help(self, out: Any) -> Help | None:
        if out is None or isinstance(out, Help):
            return out
        if isinstance(out, str):
            if self.result_kind == "continuation":
                return Help(kind="continuation", text=out, sources=(self.name,))
            return Help(kind="evidence", passages=(out,), sources=(self.name,))
        if isinstance(out, Sequence) and all(isinstance(p, str) for p in out):
            return Help(kind=self.result_kind, passages=tuple(out), sources=(self.name,))
        raise TypeError(
            f"callback {self.name!r} returned {type(out).__name__}; return a str, a list of str, a Help or None"
        )
