"""Runtime events -> the response's text, calls and finish reason, with stop sequences applied."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from lacy_mlx.runtime.events import Call, DelegateError, Done, Event, Evidence, Token
from lacy_mlx.server.responses import CallRecord, Transcript
from lacy_mlx.server.stops import StopText
from lacy_mlx.server.worker import Scored


class Collector:
    """Feed it a generation's events in order; :meth:`add` returns the text to send now.

    When a stop sequence matches, ``on_stop`` is called (it cancels the generation) and later
    tokens are dropped; the finish reason is then ``stop``.
    """

    def __init__(self, stops: Sequence[str], on_stop: Callable[[], None]) -> None:
        self.transcript = Transcript()
        self.stop = StopText(stops)
        self.on_stop = on_stop
        self.pending: list[dict[str, object]] = []

    def take_logprobs(self) -> list[dict[str, object]]:
        """Log-probability entries not yet sent (a stream sends them with its next chunk)."""
        out, self.pending = self.pending, []
        return out

    def add(self, ev: Event | Scored) -> str:
        t = self.transcript
        if isinstance(ev, Scored):
            if not self.stop.stopped:
                entry = {**ev.entry, "text_offset": len(t.text) + len(self.stop.buf)}
                t.logprobs.append(entry)
                self.pending.append(entry)
            ev = ev.token
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
            tail = "" if self.stop.stopped else self.stop.feed(ev.trailing_text)
            if self.stop.stopped:
                self.on_stop()
            else:
                tail += self.stop.flush()
            t.text += tail
            t.finish = "length" if ev.finish_reason == "length" and not self.stop.stopped else "stop"
            return tail
        return ""
