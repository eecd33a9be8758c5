"""Runtime events -> the response's text, calls and finish reason, with stop sequences applied."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from lacy_mlx.runtime.events import Call, DelegateError, Done, Event, Evidence, Token
from lacy_mlx.server.responses import CallRecord, Transcript
from lacy_mlx.server.stops import StopText


class Collector:
    """Feed it a generation's events in order; :meth:`add` returns the text to send now.

    When a stop sequence matches, ``on_stop`` is called (it cancels the generation) and later
    tokens are dropped; the finish reason is then ``stop``.
    """

    def __init__(self, stops: Sequence[str], on_stop: Callable[[], None]) -> None:
        self.transcript = Transcript()
        self.stop = StopText(stops)
        self.on_stop = on_stop

    def add(self, ev: Event) -> str:
        t = self.transcript
        if isinstance(ev, Token):
            if self.stop.stopped:
                return ""
            out = self.stop.feed(ev.text)
            t.text += out
            if self.stop.stopped:
                self.on_stop()
            return out
        if isinstance(ev, Call):
            t.calls.append(CallRecord(ev, len(t.text) + len(self.stop.buf)))
        elif isinstance(ev, (Evidence, DelegateError)):
            rec = next((r for r in reversed(t.calls) if r.evidence is None and r.error is None), None)
            if rec is not None:
                if isinstance(ev, Evidence):
                    rec.evidence = ev
                else:
                    rec.error = ev
        elif isinstance(ev, Done):
            t.done = ev
            tail = "" if self.stop.stopped else self.stop.flush()
            t.text += tail
            t.finish = "length" if ev.finish_reason == "length" and not self.stop.stopped else "stop"
            return tail
        return ""
