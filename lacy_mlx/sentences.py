"""What ends a sentence, for everything that counts sentences in generated or prompt text.

One rule: a sentence ends at ``.``, ``!``, ``?`` or a newline. The runtime ends a sentence at a
token whose text holds one of them (the gate's per-sentence limits, prefix injection's
regeneration, ``max_sentences``), the text query takes the question's last sentence by it, the
server's citations run to the end of a sentence by it, and training's tagger starts a sentence
after it. (Chunking documents for the store is another task with its own, stricter split:
:mod:`lacy_mlx.chunker` wants whitespace after the mark, so "3.5" or "e.g." stay whole.)
"""
from __future__ import annotations

import re

SENTENCE_END_CHARS = ".!?\n"
_END_SET = frozenset(SENTENCE_END_CHARS)
_SPLIT = re.compile(f"(?<=[{re.escape(SENTENCE_END_CHARS)}])\\s*")


def ends_sentence(piece: str) -> bool:
    """Whether the text ``piece`` (e.g. one token's) holds a sentence end."""
    return not _END_SET.isdisjoint(piece)


def sentence_end(text: str, start: int = 0) -> int:
    """The index just past the first sentence end at or after ``start``; ``len(text)`` if none."""
    ends = [i + 1 for i in (text.find(ch, start) for ch in SENTENCE_END_CHARS) if i >= 0]
    return min(ends) if ends else len(text)


def last_sentence(text: str) -> str:
    """The last non-empty sentence of ``text``, stripped ("" for blank text)."""
    parts = [p for p in _SPLIT.split(text.strip()) if p.strip()]
    return parts[-1].strip() if parts else ""
