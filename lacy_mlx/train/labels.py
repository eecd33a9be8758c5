"""The grammatical fact signal: which words of a text belong to a factual span, aligned to tokens.

Two taggers share one contract, ``tag(text) -> list[(start, end)]`` character spans (end exclusive)
of factual phrases:

- :class:`SpacyTagger` when spaCy and an English pipeline are installed (entities, proper nouns,
  numbers);
- :class:`RuleTagger` otherwise: numbers, month names, capitalised words that do not start a
  sentence, and known entity shapes (a capitalised run joined by "of"/"for", "D Month YYYY" dates,
  a sentence-initial capitalised word followed by another one, as in a full name).

:func:`align_spans` maps spans onto BPE tokens through the tokenizer's character offsets.
"""
from __future__ import annotations

from typing import Any

import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from lacy_mlx.sentences import ends_sentence
from lacy_mlx.train.pools import MONTHS

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+(?:[.,]\d+)*")
_JOINERS = {"of", "for", "de", "van", "von", "the"}
_MONTHS = set(MONTHS)


class Tagger(Protocol):
    name: str

    def tag(self, text: str) -> list[tuple[int, int]]:
        """Character spans of factual phrases in ``text``, sorted, non-overlapping."""


class RuleTagger:
    """Dependency-free tagger (see the module docstring for its rules)."""

    name = "rules"

    def tag(self, text: str) -> list[tuple[int, int]]:
        words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
        flags = [self._is_fact(text, words, i) for i in range(len(words))]
        # "University of Lyon", "the Kessler Prize for Science": joiners between two fact words join them.
        for i in range(1, len(words) - 1):
            if not flags[i] and words[i][2] in _JOINERS and flags[i - 1] and self._next_cap(words, i):
                flags[i] = True
        return _merge([(s, e) for (s, e, _), f in zip(words, flags) if f], text)

    @staticmethod
    def _next_cap(words: list, i: int) -> bool:
        j = i + 1
        while j < len(words) and words[j][2] in _JOINERS:
            j += 1
        return j < len(words) and words[j][2][0].isupper()

    @staticmethod
    def _is_fact(text: str, words: list, i: int) -> bool:
        start, _, w = words[i]
        if w[0].isdigit() or w in _MONTHS:
            return True
        if not w[0].isupper():
            return False
        if not _starts_sentence(text, start):
            return True
        # A sentence-initial capitalised word is a name only when another capitalised word follows it.
        nxt = words[i + 1] if i + 1 < len(words) else None
        return bool(nxt and nxt[2][0].isupper() and text[words[i][1]:nxt[0]] == " ")


def _starts_sentence(text: str, start: int) -> bool:
    before = text[:start].rstrip()
    return not before or ends_sentence(before[-1]) or before[-1] == ">"  # ">": after </EVIDENCE>


def _merge(spans: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
    """Join spans separated only by spaces into one phrase."""
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if out and text[out[-1][1]:s].strip() == "":
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


class SpacyTagger:
    """Named entities, proper nouns and numbers from a spaCy English pipeline."""

    name = "spacy"
    _FACT_POS = {"PROPN", "NUM"}

    def __init__(self, model: "str | Any" = "en_core_web_sm") -> None:
        """``model``: an installed pipeline's name, or a ready ``spacy.Language`` (e.g. a blank one with rules)."""
        if isinstance(model, str):
            import spacy  # optional extra: pip install 'lacy-mlx[spacy]' and an English pipeline

            self.nlp = spacy.load(model, disable=["lemmatizer"])
            self.name = f"spacy:{model}"
        else:
            self.nlp = model
            self.name = f"spacy:{model.meta.get('name', 'custom')}"

    def tag(self, text: str) -> list[tuple[int, int]]:
        doc = self.nlp(text)
        spans = [(e.start_char, e.end_char) for e in doc.ents]
        spans += [(t.idx, t.idx + len(t.text)) for t in doc if t.pos_ in self._FACT_POS or t.like_num]
        spans.sort()
        merged: list[tuple[int, int]] = []
        for s, e in spans:  # overlapping entity/token spans become one
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
            else:
                merged.append((s, e))
        return _merge(merged, text)


def make_tagger(kind: str = "auto") -> Tagger:
    """``"rules"``, ``"spacy"`` / ``"spacy:<pipeline>"``, or ``"auto"`` (spaCy when usable, else rules)."""
    if kind == "rules":
        return RuleTagger()
    if kind.startswith("spacy"):
        return SpacyTagger(kind.partition(":")[2] or "en_core_web_sm")
    try:
        return SpacyTagger()
    except (ImportError, OSError):  # spaCy absent, or its English pipeline is not installed
        return RuleTagger()


def align_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Per-token span number (1-based, 0 = not factual): a token belongs to the span its characters overlap.

    ``offsets`` are the tokenizer's ``(start, end)`` character offsets of each token (a byte-level
    BPE token such as " Lyon" may include the leading space; overlap handles it).
    """
    out = np.zeros(len(offsets), dtype=np.int32)
    j = 0
    for t, (s, e) in enumerate(offsets):
        while j < len(spans) and spans[j][1] <= s:
            j += 1
        if j < len(spans) and s < spans[j][1] and e > spans[j][0] and e > s:
            out[t] = j + 1
    return out
