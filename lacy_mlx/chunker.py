"""Split documents into overlapping chunks that respect paragraphs and sentences.

Deterministic and dependency-free. A chunk is a character span of the original text, so a search
hit can point back into its document. Sizes are counted in tokens by a pluggable ``count``
function (default: words and punctuation marks, a close proxy for subword counts / 1.3).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def count_tokens(text: str) -> int:
    """Default token count: words plus punctuation marks."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class Chunk:
    """One chunk: ``text == source[start:end]``; ``ordinal`` counts from 0 within its document."""

    ordinal: int
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class ChunkerConfig:
    """Chunking limits: at most ``max_tokens`` per chunk, ``overlap`` tokens repeated between neighbours."""

    max_tokens: int = 128
    overlap: int = 16

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.overlap < self.max_tokens:
            raise ValueError(f"overlap must be in [0, max_tokens), got {self.overlap}")


def _spans(text: str, pattern: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` at ``pattern`` into trimmed, non-empty spans."""
    out, pos = [], start
    for m in pattern.finditer(text, start, end):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, end))
    trimmed = []
    for s, e in out:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            trimmed.append((s, e))
    return trimmed


def _split_long(text: str, s: int, e: int, budget: int, count: Callable[[str], int]) -> list[tuple[int, int]]:
    """Cut a span longer than ``budget`` tokens at word boundaries (token counts add up across words)."""
    pieces: list[tuple[int, int]] = []
    piece_start, used = -1, 0
    for m in re.finditer(r"\S+", text[s:e]):
        n = count(m.group())
        if piece_start >= 0 and used + n > budget:
            pieces.append((piece_start, last_end))
            piece_start, used = -1, 0
        if piece_start < 0:
            piece_start = s + m.start()
        used += n
        last_end = s + m.end()
    if piece_start >= 0:
        pieces.append((piece_start, last_end))
    return pieces


def _units(text: str, budget: int, count: Callable[[str], int]) -> list[tuple[int, int, bool]]:
    """Sentence spans ``(start, end, starts_paragraph)``, each within ``budget`` tokens."""
    units = []
    for ps, pe in _spans(text, _PARAGRAPH_BREAK, 0, len(text)):
        first = True
        for ss, se in _spans(text, _SENTENCE_END, ps, pe):
            pieces = [(ss, se)] if count(text[ss:se]) <= budget else _split_long(text, ss, se, budget, count)
            for s, e in pieces:
                units.append((s, e, first))
                first = False
    return units


def chunk_text(
    text: str, config: ChunkerConfig | None = None, *, count: Callable[[str], int] = count_tokens
) -> list[Chunk]:
    """Pack sentences into chunks of at most ``max_tokens``, carrying ``overlap`` tokens of whole sentences.

    A new paragraph starts a new chunk when the current one is already half full, so chunks
    rarely straddle a topic change. Empty or whitespace-only text gives no chunks.
    """
    cfg = config or ChunkerConfig()
    units = _units(text, cfg.max_tokens, count)
    sizes = [count(text[s:e]) for s, e, _ in units]
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j, used = i, 0
        while j < len(units) and used + sizes[j] <= cfg.max_tokens:
            if j > i and units[j][2] and used >= cfg.max_tokens // 2:
                break  # paragraph boundary in a half-full chunk: start afresh
            used += sizes[j]
            j += 1
        j = max(j, i + 1)  # a unit never exceeds the budget, but guard progress anyway
        start, end = units[i][0], units[j - 1][1]
        chunks.append(Chunk(len(chunks), text[start:end], start, end))
        if j >= len(units):
            break
        # Step back over whole trailing sentences worth at most `overlap` tokens.
        back, carried = j, 0
        while back - 1 > i and carried + sizes[back - 1] <= cfg.overlap:
            back -= 1
            carried += sizes[back]
        i = back
    return chunks
