"""The evaluation metrics, one definition each: claims, calls, leakage, speed.

A biography is the text a model writes after a person's name. Its claims are the sentences that
match a biography template (:func:`lacy_mlx.train.corpus.parse_claims`); a claim is true when its
value equals the person's gold value exactly (FactScore-style, no partial credit).

Each call is judged by what the model alone would have written at that point (the runtime's
``Call.alone`` probe, <CALL> masked) and by the relation whose template head the sentence ends
with there ("She was born in" -> ``birthplace``):

- *needed*: the call sits at a value (a relation is known) and the model alone would not state
  its gold value there: the call is placed where the model would state a false value.
- *leaked*: the model alone would state the gold value anyway (the call was not needed); at a
  call outside any value, any gold value of the person counts.

Per group of people: ``factual_precision`` = true claims / claims; ``claims_per_bio``;
``call_rate`` = calls / generated tokens; ``call_precision`` = needed calls / calls;
``call_recall`` = share of the (person, relation) values the model alone states falsely for which
the cascade called in a sentence of that relation; ``leakage`` = leaked calls / calls;
``tokens_per_s`` = generated tokens / generation seconds. A ratio with a zero denominator is None.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lacy_mlx.runtime.events import call_rate as calls_per_token
from lacy_mlx.train.corpus import BIO_TEMPLATES, CLAIM_PATTERNS, Person, parse_claims


@dataclass(frozen=True)
class Claim:
    relation: str
    value: str
    true: bool


@dataclass(frozen=True)
class CallRecord:
    """One call: the relation at its position (None: not at a value), how the model alone did, and
    where it sits: ``sentence`` (0 = the sentence after the name) and ``word`` (words of that
    sentence before the call; 0 = its first word)."""

    relation: str | None
    needed: bool
    leaked: bool
    sentence: int = 0
    word: int = 0


@dataclass
class Biography:
    """One generated biography and what was measured on it."""

    pid: str
    text: str
    claims: list[Claim]
    calls: list[CallRecord] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    # Model-alone runs: (character offset in ``text``, p(<CALL>), entropy) per generated token.
    scores: list[tuple[int, float, float]] = field(default_factory=list)


def biography_text(person: Person, output: str) -> str:
    """The person's name followed by the model's continuation of it (the text claims are parsed from)."""
    return person.name + ("" if output.startswith(" ") else " ") + output


def check_claims(person: Person, output: str) -> list[Claim]:
    """The claims of the biography ``output`` (written after ``person.name``), each checked exactly."""
    return [Claim(rel, v, v == person.facts.get(rel)) for rel, v in parse_claims(biography_text(person, output))]


def relation_at(prefix: str) -> str | None:
    """The relation whose template head the text ``prefix`` ends with (e.g. "... She was born in")."""
    words_at_end = prefix.split()
    best = None
    for rel, templates in BIO_TEMPLATES.items():
        for t in templates:
            head = t.split("{v}")[0]
            words = head.replace("{S}", "").replace("{P}", "").replace("{p}", "").split()
            if words and words_at_end[-len(words):] == words:
                best = rel
    return best


def judge_call(person: Person, output_before: str, alone: str) -> CallRecord:
    """Judge a call made after ``output_before`` where the model alone would have written ``alone``."""
    text = biography_text(person, output_before)
    sentence = text[text.rfind(".") + 1:].strip() or text
    rel = relation_at(sentence)
    seen = sentence + alone
    tail = text[text.rfind(".") + 1:] if "." in text else text[len(person.name):]  # the sentence so far
    where = {"sentence": text.count("."), "word": len(tail.split())}
    if rel is None:
        return CallRecord(None, False, any(v in seen for v in person.facts.values()), **where)
    leaked = person.facts[rel] in seen
    return CallRecord(rel, not leaked, leaked, **where)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def factual_precision(bios: Sequence[Biography]) -> float | None:
    return _ratio(sum(c.true for b in bios for c in b.claims), sum(len(b.claims) for b in bios))


def claims_per_bio(bios: Sequence[Biography]) -> float | None:
    return _ratio(sum(len(b.claims) for b in bios), len(bios))


def call_rate(bios: Sequence[Biography]) -> float | None:
    return calls_per_token(sum(len(b.calls) for b in bios), sum(b.tokens for b in bios))


def call_precision(bios: Sequence[Biography]) -> float | None:
    return _ratio(sum(c.needed for b in bios for c in b.calls), sum(len(b.calls) for b in bios))


def leakage(bios: Sequence[Biography]) -> float | None:
    return _ratio(sum(c.leaked for b in bios for c in b.calls), sum(len(b.calls) for b in bios))


def call_recall(alone: Sequence[Biography], cascade: Sequence[Biography]) -> float | None:
    """Share of the model-alone false (person, relation) values where the cascade called (same people)."""
    called = {(b.pid, c.relation) for b in cascade for c in b.calls if c.relation is not None}
    wrong = {(b.pid, c.relation) for b in alone for c in b.claims if not c.true}
    return _ratio(len(wrong & called), len(wrong))


def tokens_per_s(bios: Sequence[Biography]) -> float | None:
    return _ratio(sum(b.tokens for b in bios), sum(b.seconds for b in bios))


def summarize(bios: Sequence[Biography], alone: Sequence[Biography] | None = None) -> dict[str, float | int | None]:
    """Every metric of one group (``alone``: the same people's model-alone biographies, for recall)."""
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 4)

    return {
        "people": len(bios),
        "claims": sum(len(b.claims) for b in bios),
        "true_claims": sum(c.true for b in bios for c in b.claims),
        "calls": sum(len(b.calls) for b in bios),
        "tokens": sum(b.tokens for b in bios),
        "factual_precision": r(factual_precision(bios)),
        "claims_per_bio": r(claims_per_bio(bios)),
        "call_rate": r(call_rate(bios)),
        "call_precision": r(call_precision(bios)),
        "call_recall": r(call_recall(alone, bios)) if alone is not None else None,
        "leakage": r(leakage(bios)),
        "tokens_per_s": r(tokens_per_s(bios)),
    }


def at_rate(points: Sequence[tuple[float, float | None]], rate: float) -> float | None:
    """The value at call rate ``rate``, linearly interpolated between the two nearest of the
    measured ``(call_rate, value)`` points (one per setting of a sweep; ``alone`` is rate 0).
    None outside the measured rates or where a neighbour's value is None: no extrapolation."""
    pts = sorted((r, v) for r, v in points if v is not None)
    for (r0, v0), (r1, v1) in zip(pts, pts[1:]):
        if r0 <= rate <= r1:
            return v0 if r1 == r0 else v0 + (v1 - v0) * (rate - r0) / (r1 - r0)
    return pts[0][1] if len(pts) == 1 and pts[0][0] == rate else None


def call_sites(bios: Sequence[Biography]) -> dict[str, float | int | None]:
    """Where the calls of ``bios`` sit: ``at_value`` (share at a value, a template head before
    them), ``first_word`` (share at a sentence's first word), ``mean_sentence`` (mean index of the
    sentence called in) and ``needed_at_value`` (call precision among the calls at a value)."""
    calls = [c for b in bios for c in b.calls]
    at_value = [c for c in calls if c.relation is not None]
    return {
        "calls": len(calls),
        "at_value": _ratio(len(at_value), len(calls)),
        "first_word": _ratio(sum(c.word == 0 for c in calls), len(calls)),
        "mean_sentence": _ratio(sum(c.sentence for c in calls), len(calls)),
        "needed_at_value": _ratio(sum(c.needed for c in at_value), len(at_value)),
    }


def value_positions(text: str) -> list[tuple[int, int, str, str]]:
    """``(start, end, relation, value)`` of each claim's value in ``text`` (character positions),
    for the sentences that :func:`lacy_mlx.train.corpus.parse_claims` parses."""
    out, pos = [], 0
    for piece in re.split(r"(?<=\.)", text):
        lead = len(piece) - len(piece.lstrip())
        sentence = piece.strip()
        for rel, pat in CLAIM_PATTERNS:
            m = pat.fullmatch(sentence)
            if m:
                v = m.group("v")
                start = pos + lead + m.start("v") + (len(v) - len(v.lstrip()))
                out.append((start, start + len(v.strip()), rel, v.strip()))
                break
        pos += len(piece)
    return out


def score_separation(person: Person, bio: Biography) -> list[tuple[str, float, float]]:
    """Each token of a model-alone biography as ``(kind, p_call, entropy)``: ``unknown`` for the
    token a value starts in when the value is false, ``known`` when it is the gold value,
    ``inside`` for a value's later tokens, ``other`` elsewhere: how well a gate score separates
    what the model does not know from what it does."""
    full = biography_text(person, bio.text)
    shift = len(full) - len(bio.text)
    values = value_positions(full)
    starts = [o + shift for o, _, _ in bio.scores] + [len(full)]
    rows = []
    for i, (_, p_call, entropy) in enumerate(bio.scores):
        lo, hi = starts[i], starts[i + 1]
        kind = "other"
        for v_start, v_end, rel, value in values:
            if lo <= v_start < hi:
                kind = "known" if value == person.facts.get(rel) else "unknown"
            elif v_start < lo < v_end:
                kind = "inside"
        rows.append((kind, p_call, entropy))
    return rows


def auc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """P(a score of ``pos`` > one of ``neg``), ties half: 1 = perfect separation, 0.5 = none."""
    if not pos or not neg:
        return None
    import numpy as np

    neg_sorted = np.sort(np.asarray(neg, dtype=np.float64))
    p = np.asarray(pos, dtype=np.float64)
    below = np.searchsorted(neg_sorted, p, side="left")
    ties = np.searchsorted(neg_sorted, p, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(p) * len(neg_sorted)))
