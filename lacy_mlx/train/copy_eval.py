"""Oracle-evidence probes: can the model copy a value out of an evidence block, and does it call there?

For each person and relation the probe writes the sentence head of a biography template
("Ada Moreau was born in"), then decodes greedily (``<CALL>`` masked) up to the sentence's end:

- ``alone``: straight after the head (what the model knows by itself);
- ``k=N``: after ``<CALL><EVIDENCE>`` + N passages + ``</EVIDENCE>``, the right passage among
  N-1 distractors (another fact of the same person, the same relation of other people), shuffled:
  what the runtime's inline injection relies on, with retrieval taken out of the picture.

It also records p(``<CALL>``) right after the head (where the cascade should ask) and after the
subject alone ("Ada Moreau", where it should not). Every number is exact string match.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from lacy_mlx.tokens import CALL_TOKEN, END_OF_TEXT, EVIDENCE_END, EVIDENCE_START
from lacy_mlx.train.copying import format_evidence
from lacy_mlx.train.corpus import BIO_TEMPLATES, RELATIONS, Person, evidence_passage
from lacy_mlx.train.model import lm_logits


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


class _Greedy:
    def __init__(self, model, tok) -> None:
        self.model, self.tok = model, tok
        self.call, self.eot = tok.token_to_id(CALL_TOKEN), tok.token_to_id(END_OF_TEXT)
        self.ev = (tok.token_to_id(EVIDENCE_START), tok.token_to_id(EVIDENCE_END))

    def logits(self, ids: list[int], cache) -> mx.array:
        h = self.model.model(mx.array(ids)[None], cache=cache)[:, -1]
        return lm_logits(self.model, h)[0].astype(mx.float32)

    def p_call(self, ids: list[int]) -> float:
        return float(mx.softmax(self.logits(ids, make_prompt_cache(self.model)))[self.call])

    def continue_sentence(self, ids: list[int], max_tokens: int = 16) -> tuple[str, float]:
        """Greedy text after ``ids`` (no ``<CALL>``) up to the first ``.``, and p(<CALL>) right after ``ids``."""
        cache = make_prompt_cache(self.model)
        logits, out = self.logits(ids, cache), []
        p_call = float(mx.softmax(logits)[self.call])
        for _ in range(max_tokens):
            logits[self.call] = -mx.inf
            t = int(mx.argmax(logits))
            if t == self.eot:
                break
            out.append(t)
            if "." in self.tok.id_to_token(t):
                break
            logits = self.logits([t], cache)
        return self.tok.decode(out).split(".")[0].strip(), p_call


def copy_probe(model, tok, people: list[Person], *, distractors: list[Person], ks: tuple[int, ...] = (1, 3),
               seed: int = 0) -> CopyReport:
    """Run the probes (module docstring) for every person of ``people`` and every relation.

    ``distractors``: people whose passages of the same relation fill the blocks (others than the
    subject are drawn from it). Deterministic for a given ``seed``.
    """
    rng = random.Random(seed)
    g = _Greedy(model, tok)
    right = {k: 0 for k in ("alone", *(f"k{k}" for k in ks))}
    p_value, p_subject, n = [], [], 0
    for person in people:
        subject = [g.eot] + tok.encode(person.name, add_special_tokens=False).ids
        p_subject.append(g.p_call(subject))
        for rel in RELATIONS:
            template = next(t for t in BIO_TEMPLATES[rel] if t.startswith("{S}"))
            head = template.split("{v}")[0].format(S=person.name).rstrip()
            base = [g.eot] + tok.encode(head, add_special_tokens=False).ids
            value = person.facts[rel]
            n += 1
            alone, p_call = g.continue_sentence(base)
            p_value.append(p_call)
            right["alone"] += alone == value
            for k in ks:
                block = _block(person, rel, k, distractors, rng)
                ids = base + [g.call, g.ev[0]] + tok.encode(format_evidence(block), add_special_tokens=False).ids
                right[f"k{k}"] += g.continue_sentence(ids + [g.ev[1]])[0] == value
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
