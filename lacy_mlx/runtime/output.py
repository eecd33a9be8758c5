"""The output side of a generation: token ids, streamed text, and the current sentence.

Text comes from mlx-lm's streaming detokenizer. With ``hold_sentences`` (prefix injection) the
tokens of the current sentence are held back until it ends, because a call may throw the sentence
away and generate it again: every ``Token`` event the runtime yields is final.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lacy_mlx.runtime.events import Token
from lacy_mlx.sentences import ends_sentence


@dataclass
class _Pending:
    id: int
    step: int
    source: str
    entropy: float | None
    p_call: float | None
    confidence: float
    logprob: tuple[float, tuple[tuple[int, float], ...]] | None = None


class OutputText:
    """Accumulates output tokens and turns them into :class:`Token` events."""

    def __init__(self, tokenizer: Any, *, hold_sentences: bool = False) -> None:
        self.tokenizer = tokenizer
        self.detok = tokenizer.detokenizer
        self.hold = hold_sentences
        self.ids: list[int] = []  # committed (already yielded) ids
        self.text = ""  # committed text
        self.sentence: list[_Pending] = []  # current sentence (committed or held)
        self.held: list[_Pending] = []
        self._boundary: dict[int, bool] = {}
        self._piece: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.ids) + len(self.held)

    def add(self, token: int, step: int, *, source: str = "model", entropy: float | None = None,
            p_call: float | None = None, confidence: float = 1.0,
            logprob: tuple[float, tuple[tuple[int, float], ...]] | None = None) -> tuple[list[Token], bool]:
        """Add one token; (events to yield now, whether it ended a sentence)."""
        item = _Pending(token, step, source, entropy, p_call, confidence, logprob)
        self.sentence.append(item)
        ended = self._is_boundary(token)
        if self.hold:
            self.held.append(item)
            events = self._commit(self.held) if ended else []
            if ended:
                self.held = []
        else:
            events = self._commit([item])
        if ended:
            self.sentence = []
        return events, ended

    def flush(self) -> tuple[list[Token], str]:
        """Commit what is held; (its events, the text the detokenizer held back). Call once at the end."""
        events = self._commit(self.held)
        self.held = []
        self.detok.finalize()
        tail = self.detok.last_segment
        self.text += tail
        return events, tail

    def drop_held(self) -> int:
        """Forget the held tokens (their sentence is generated again); how many were dropped."""
        n = len(self.held)
        held_ids = {id(p) for p in self.held}
        self.sentence = [p for p in self.sentence if id(p) not in held_ids]
        self.held = []
        return n

    def sentence_pieces(self) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """The current sentence's token texts and their confidences."""
        return tuple(self.piece(p.id) for p in self.sentence), tuple(p.confidence for p in self.sentence)

    def current_text(self) -> str:
        """Committed text plus the held tokens' text."""
        if not self.held:
            return self.text
        return self.text + self.tokenizer.decode([p.id for p in self.held])

    def piece(self, token: int) -> str:
        """The text of one token on its own (cached)."""
        s = self._piece.get(token)
        if s is None:
            s = self._piece[token] = self.tokenizer.decode([token])
        return s

    def _is_boundary(self, token: int) -> bool:
        b = self._boundary.get(token)
        if b is None:
            b = self._boundary[token] = ends_sentence(self.piece(token))
        return b

    def _commit(self, items: list[_Pending]) -> list[Token]:
        events = []
        for p in items:
            self.detok.add_token(p.id)
            seg = self.detok.last_segment
            self.text += seg
            self.ids.append(p.id)
            lp, top = p.logprob if p.logprob is not None else (None, ())
            events.append(Token(seg, p.id, p.step, p.source, p.entropy, p.p_call, lp, top))
        return events
