"""Stop sequences over streamed text: text is released only once no stop can start inside it."""
from __future__ import annotations

from collections.abc import Sequence


class StopText:
    """Feed text pieces; get back what is safe to send and whether a stop sequence matched.

    The last ``max(len(stop)) - 1`` characters are held back, since a stop sequence may begin
    there and end in a later piece; the stop itself is never sent (as OpenAI does).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add ``text``; the text that can be sent now (empty once stopped)."""
        if self.stopped:
            return ""
        self.buf += text
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buf, self.stopped = self.buf[: min(hits)], "", True
            return out
        cut = max(0, len(self.buf) - self.hold)
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out

    def flush(self) -> str:
        """The held-back tail, at the end of the generation."""
        out, self.buf = self.buf, ""
        return out
