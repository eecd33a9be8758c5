"""Oracle-evidence probes: can the model copy a value out of an evidence block, and does it call there?

For each person and relation the probe gives the runtime the sentence head of a biography template
("Ada Moreau was born in"), then decodes greedily (``<CALL>`` masked) up to the sentence's end:

- ``alone``: straight after the head (what the model knows by itself);
- ``k=N``: after a call at the value answered with N passages (the runtime injects them inline
  as ``<CALL><EVIDENCE>...</EVIDENCE>``): the right passage among N-1 distractors (another
  fact of the same person, the same relation of other people), shuffled. This is what inline
  injection relies on, with retrieval taken out of the picture.

It also records p(``<CALL>``) right after the head (where the cascade should ask) and after the
subject alone ("Ada Moreau", where it should not). Every number is exact string match.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lacy_mlx.runtime.delegates.base import CallContext, Help
from lacy_mlx.runtime.events import Call, Done, Token
from lacy_mlx.tokens import END_OF_TEXT
from lacy_mlx.train.corpus import BIO_TEMPLATES, RELATIONS, Person, evidence_passage


@dataclass
class CopyReport:
    """Accuracies (share of exact values) per setting, and mean p(<CALL>) at value and non-value spots."""

    probes: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    p_call_value: float = 0.0
    p_call_subject: float = 0.0

    def summary(self) -> dict:
        return {"probes": self.probes, **{f"acc_{k}": round(v, 4) for k, v in self.accuracy.items()},
                "p_call_value": round(self.p_call_value, 4), "p_call_subject": round(self.p_call_subject, 4)}


class OracleDelegate:
    """Answers every call with the passages the probe chose for the current generation."""

    name = "oracle"
    kind = "callback"
    needs_hidden = False

    def __init__(self) -> None:
        self.passages: list[str] = []

    def __call__(self, ctx: CallContext) -> Help:
        return Help(kind="evidence", passages=tuple(self.passages), sources=(self.name,))


def _sentence(lacy: Any, prompt: str, **gate: Any) -> tuple[str, float, int]:
    """The runtime's greedy text after ``prompt`` up to the first ``.`` (<CALL> masked), p(<CALL>)
    at the first step, and the number of calls made."""
    text, p_call, calls = "", None, 0
    for ev in lacy.stream(prompt, max_tokens=16, max_sentences=1, per_sentence=1, **gate):
        if isinstance(ev, Token):
            text += ev.text
            p_call = ev.p_call if p_call is None else p_call
        elif isinstance(ev, Call):
            calls += 1
        elif isinstance(ev, Done):
            text += ev.trailing_text
    return text.split(".")[0].strip(), float(p_call or 0.0), calls


def copy_probe(model_dir: str | Path, people: list[Person], *, distractors: list[Person],
               ks: tuple[int, ...] = (1, 3), seed: int = 0) -> CopyReport:
    """Run the probes (module docstring) for every person of ``people`` and every relation.

    The model runs through :func:`lacy_mlx.load`: alone with no call allowed, with evidence as a
    call forced at the value (threshold 0, one call) that an :class:`OracleDelegate` answers.
    ``distractors``: people whose passages of the same relation fill the blocks (others than the
    subject are drawn from it). Deterministic for a given ``seed``.
    """
    import lacy_mlx

    oracle = OracleDelegate()
    lacy = lacy_mlx.load(str(model_dir), delegate=oracle)
    rng = random.Random(seed)
    right = {k: 0 for k in ("alone", *(f"k{k}" for k in ks))}
    p_value, p_subject, n = [], [], 0
    for person in people:
        p_subject.append(_sentence(lacy, END_OF_TEXT + person.name, max_calls=0)[1])
        for rel in RELATIONS:
            template = next(t for t in BIO_TEMPLATES[rel] if t.startswith("{S}"))
            head = END_OF_TEXT + template.split("{v}")[0].format(S=person.name).rstrip()
            value = person.facts[rel]
            n += 1
            alone, p_call, _ = _sentence(lacy, head, max_calls=0)
            p_value.append(p_call)
            right["alone"] += alone == value
            for k in ks:
                oracle.passages = _block(person, rel, k, distractors, rng)
                copied, _, calls = _sentence(lacy, head, max_calls=1, call_threshold=0.0)
                assert calls == 1  # threshold 0: the call happens at the first step
                right[f"k{k}"] += copied == value
    return CopyReport(n, {k: v / max(n, 1) for k, v in right.items()},
                      float(np.mean(p_value)) if p_value else 0.0, float(np.mean(p_subject)) if p_subject else 0.0)


def _block(person: Person, rel: str, k: int, distractors: list[Person], rng: random.Random) -> list[str]:
    """The right passage plus ``k - 1`` distractors, shuffled (wording variants drawn at random)."""
    block = [evidence_passage(person, rel, rng.randrange(2))]
    if k > 1:
        other_rel = rng.choice([r for r in RELATIONS if r != rel])
        block.append(evidence_passage(person, other_rel, rng.randrange(2)))
    pool = [p for p in distractors if p.pid != person.pid]
    while len(block) < k and pool:
        block.append(evidence_passage(rng.choice(pool), rel, rng.randrange(2)))
    rng.shuffle(block)
    return block
