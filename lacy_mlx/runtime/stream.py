"""A generation the host iterates and can stop: :meth:`lacy_mlx.Lacy.stream` returns one.

Stopping frees the generation's state (KV cache, detokenizer, delegate context) right away:

- break out of the ``for`` loop, or call :meth:`Stream.close` (from the iterating thread), or
  leave a ``with`` block: the stream ends without a ``Done`` event;
- :meth:`Stream.cancel` (from any thread, e.g. a UI's stop button or a server whose client
  went away): the loop stops before its next step and yields ``Done(finish_reason="cancelled")``.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from lacy_mlx.errors import LacyError
from lacy_mlx.runtime.events import Done, Event

if TYPE_CHECKING:
    from lacy_mlx.runtime.cascade import Cascade


class _Owner(Protocol):
    """What a stream needs of the :class:`~lacy_mlx.Lacy` that started it: one generation at a time."""

    _busy: threading.Lock


class Stream(Iterator[Event]):
    """The events of one generation (see :mod:`lacy_mlx.runtime.events`); ``done`` is the final
    ``Done`` once it was yielded. Nothing runs until the first ``next()``."""

    def __init__(self, owner: _Owner, run: Cascade) -> None:
        self._cancel = run.cancel
        self._events = _generate(owner, run)
        self.done: Done | None = None

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Event:
        ev = next(self._events)
        if isinstance(ev, Done):
            self.done = ev
        return ev

    def cancel(self) -> None:
        """Ask the generation to stop before its next decode step (thread-safe, idempotent).
        A delegate already running is not interrupted; the stream ends once it returns."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def close(self) -> None:
        """End the stream now and free its state (from the thread that iterates it)."""
        self._events.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _generate(owner: _Owner, run: Cascade) -> Iterator[Event]:
    """The run's events under the owner's one-generation lock. A free function, not a method:
    a generator holding its Stream would form a cycle, and a stream left by ``break`` would then
    keep the lock and the KV cache until the garbage collector ran."""
    if not owner._busy.acquire(blocking=False):
        raise LacyError(
            "this Lacy is already generating: finish or close() the other stream first "
            "(one generation at a time per Lacy; the server queues requests for this reason)"
        )
    last: Event | None = None
    try:
        for last in run:
            yield last
    finally:
        if not isinstance(last, Done) and run.reuse is not None:
            run.reuse.clear()  # stopped mid-way: what the cache holds is not known
        owner._busy.release()
