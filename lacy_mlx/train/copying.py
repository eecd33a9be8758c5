"""Evidence-copying documents: ``... born in<CALL><EVIDENCE>passages</EVIDENCE> Lyon ...``.

The runtime's inline injection appends ``<EVIDENCE>`` + retrieved passages + ``</EVIDENCE>`` after a
``<CALL>`` and lets the model continue; these documents teach the model to copy the value from
there. Both sides format the block with :mod:`lacy_mlx.tokens`. The block holds the right passage among distractors (another fact of the same person and the
same relation of another person), in random order, so copying is not a fixed pattern. Block sizes
are drawn from ``k_min..k``: one-passage blocks teach the copy itself, larger ones teach the choice
(a tiny model trained on 3-passage blocks only never learned to copy at all).

Loss roles (see :mod:`lacy_mlx.train.data`): the inserted tokens are never targets (the runtime
supplies them), and the value after ``</EVIDENCE>`` is a plain full-softmax target.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from lacy_mlx.tokens import format_evidence
from lacy_mlx.train.corpus import RELATIONS, Biography, Person


@dataclass
class Insert:
    """An evidence block placed right before the value at ``char_pos`` (the value's leading space)."""

    char_pos: int
    relation: str
    text: str


def choose_inserts(bio: Biography, person: Person, others: list[Person], passages: dict[str, str],
                   rng: random.Random, *, max_facts: int = 2, k: int = 3, k_min: int | None = None) -> list[Insert]:
    """Pick 1..``max_facts`` facts of ``bio`` and build their evidence blocks of ``k_min..k`` passages
    (``k_min`` defaults to ``k``: every block holds ``k``)."""
    n = rng.randint(1, max_facts)
    chosen = rng.sample(bio.values, min(n, len(bio.values)))
    out = []
    for v in sorted(chosen, key=lambda v: v.start):
        size = rng.randint(k_min, k) if k_min is not None and k_min < k else k
        block = [passages[f"{person.pid}/{v.relation}"]]
        if size > 1:
            other_rel = rng.choice([r for r in RELATIONS if r != v.relation])
            block.append(passages[f"{person.pid}/{other_rel}"])
        while len(block) < size and others:
            other = rng.choice(others)
            if other.pid != person.pid:
                block.append(passages[f"{other.pid}/{v.relation}"])
        rng.shuffle(block)
        out.append(Insert(v.start - 1, v.relation, format_evidence(block)))
    return out
