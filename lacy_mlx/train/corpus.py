"""A seeded synthetic knowledge base: people, their facts, biographies, evidence passages, ground truth.

Contract:
- ``make_people(n, seed)`` is deterministic: the same arguments give the same people on every machine.
- Mentions follow a Zipf-like law (``ceil(max_mentions / rank**zipf_s)``): frequent people appear in
  many biographies (a small model memorises them), rare ones once or twice (it cannot).
- ``render_biography`` writes one biography with randomly chosen templates and order and returns the
  character span of every fact value, so labels, copying and exact fact checking are all exact.
- ``evidence_passage`` words a fact differently from every biography template (record-style), so
  copying from evidence is not a fixed pattern.
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lacy_mlx.train import pools

RELATIONS = ("birth_date", "birthplace", "school", "field", "employer", "award", "spouse")

# {S} subject (full name or pronoun), {P}/{p} possessive (capitalised / not), {v} the value.
BIO_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_date": ("{S} was born on {v}.", "{S} came into the world on {v}.", "{P} birthday is {v}."),
    "birthplace": ("{S} was born in {v}.", "{S} grew up in {v}.", "{S} is a native of {v}."),
    "school": ("{S} studied at {v}.", "{S} graduated from {v}.", "{S} attended {v}."),
    "field": ("{S} worked in {v}.", "{P} field was {v}.", "{S} specialised in {v}."),
    "employer": ("{S} joined {v}.", "{S} was employed by {v}.", "{S} spent most of {p} career at {v}."),
    "award": ("{S} received the {v}.", "{S} was awarded the {v}.", "{S} won the {v}."),
    "spouse": ("{S} married {v}.", "{S} was married to {v}.", "{P} spouse was {v}."),
}
EVIDENCE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_date": ("Civil registry entry for {n}: date of birth {v}.", "Records list {v} as the birth date of {n}."),
    "birthplace": ("Census note: {n} comes from {v}.", "Place of origin of {n}: {v}."),
    "school": ("The alumni list of {v} includes {n}.", "Diploma record: {n} holds a degree from {v}."),
    "field": ("Area of expertise of {n}: {v}.", "{n} is known for research in {v}."),
    "employer": ("The staff directory of {v} names {n}.", "Payroll record: {n} is paid by {v}."),
    "award": ("Honours roll: {n} is a laureate of the {v}.", "Prize register: the {v}, given to {n}."),
    "spouse": ("Marriage register: {n} and {v}.", "Family record: the partner of {n} is {v}."),
}


@dataclass
class Person:
    """One person of the knowledge base; ``facts`` maps each relation to its value string."""

    pid: str
    name: str
    gender: str
    mentions: int
    facts: dict[str, str] = field(default_factory=dict)


@dataclass
class ValueSpan:
    """Where a fact value sits in a rendered text (character offsets, end exclusive)."""

    start: int
    end: int
    relation: str


@dataclass
class Biography:
    """A rendered biography of ``pid`` and the spans of its fact values."""

    pid: str
    text: str
    values: list[ValueSpan]


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(pools.MONTHS)} {rng.randint(1900, 1999)}"


def make_people(n: int, seed: int, *, max_mentions: int = 40, zipf_s: float = 1.0,
                exclude_names: set[str] | None = None) -> list[Person]:
    """``n`` people with all relations filled; person ``i`` (0-based rank) gets Zipf-like mentions."""
    rng = random.Random(seed)
    schools, employers, awards = pools.school_names(), pools.employer_names(), pools.award_names()
    taken = set(exclude_names or ())
    people: list[Person] = []
    if n + len(taken) > len(pools.LAST_NAMES) * (len(pools.FIRST_NAMES_F) + len(pools.FIRST_NAMES_M)) * 0.8:
        raise ValueError(f"cannot make {n} distinct people from the name pools; use fewer")
    while len(people) < n:
        gender = rng.choice(("f", "m"))
        first = rng.choice(pools.FIRST_NAMES_F if gender == "f" else pools.FIRST_NAMES_M)
        name = f"{first} {rng.choice(pools.LAST_NAMES)}"
        if name in taken:
            continue
        taken.add(name)
        rank = len(people) + 1
        spouse_first = rng.choice(pools.FIRST_NAMES_M if gender == "f" else pools.FIRST_NAMES_F)
        facts = {
            "birth_date": _date(rng),
            "birthplace": rng.choice(pools.CITIES),
            "school": rng.choice(schools),
            "field": rng.choice(pools.FIELDS),
            "employer": rng.choice(employers),
            "award": rng.choice(awards),
            "spouse": f"{spouse_first} {rng.choice(pools.LAST_NAMES)}",
        }
        mentions = max(1, math.ceil(max_mentions / rank**zipf_s))
        people.append(Person(f"p{seed}-{rank:05d}", name, gender, mentions, facts))
    return people


def _fill(template: str, person: Person, subject: str, value: str) -> tuple[str, int]:
    """The sentence and the offset of its value (templates hold ``{v}`` once)."""
    poss = "her" if person.gender == "f" else "his"
    head, tail = template.split("{v}")
    head = head.format(S=subject, P=poss.capitalize(), p=poss)
    return head + value + tail.format(S=subject, P=poss.capitalize(), p=poss), len(head)


def render_biography(person: Person, rng: random.Random) -> Biography:
    """One biography: every fact once, shuffled order, random templates; the first sentence names the person."""
    relations = list(RELATIONS)
    rng.shuffle(relations)
    # The text must open with the full name (the generation prompt), so put a subject-first template first.
    first_ok = [r for r in relations if any(t.startswith("{S}") for t in BIO_TEMPLATES[r])]
    relations.remove(first_ok[0])
    relations.insert(0, first_ok[0])
    pronoun = "She" if person.gender == "f" else "He"
    parts: list[str] = []
    values: list[ValueSpan] = []
    pos = 0
    for i, rel in enumerate(relations):
        choices = BIO_TEMPLATES[rel]
        if i == 0:
            choices = tuple(t for t in choices if t.startswith("{S}"))
        subject = person.name if i == 0 or rng.random() < 0.3 else pronoun
        sentence, off = _fill(rng.choice(choices), person, subject, person.facts[rel])
        if parts:
            pos += 1  # the joining space
        values.append(ValueSpan(pos + off, pos + off + len(person.facts[rel]), rel))
        parts.append(sentence)
        pos += len(sentence)
    return Biography(person.pid, " ".join(parts), values)


def evidence_passage(person: Person, relation: str, variant: int = 0) -> str:
    """The store passage stating ``person``'s ``relation`` (record-style wording, not a bio template)."""
    templates = EVIDENCE_TEMPLATES[relation]
    return templates[variant % len(templates)].format(n=person.name, v=person.facts[relation])


def evidence_records(people: list[Person], seed: int = 0) -> list[dict]:
    """One passage per fact, as store documents (``external_id`` = ``<pid>/<relation>``)."""
    rng = random.Random(seed)
    out = []
    for p in people:
        for rel in RELATIONS:
            out.append({
                "external_id": f"{p.pid}/{rel}",
                "title": p.name,
                "text": evidence_passage(p, rel, rng.randrange(len(EVIDENCE_TEMPLATES[rel]))),
                "metadata": {"person": p.pid, "relation": rel},
            })
    return out


def ground_truth(people: list[Person]) -> dict:
    """The JSON-able ground truth used by exact fact checking."""
    return {"relations": list(RELATIONS), "people": [asdict(p) for p in people]}


def load_people(path: str | Path) -> list[Person]:
    """People from a ground-truth JSON written by :func:`write_ground_truth`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Person(**p) for p in data["people"]]


def write_ground_truth(path: str | Path, people: list[Person]) -> None:
    Path(path).write_text(json.dumps(ground_truth(people), indent=1) + "\n", encoding="utf-8")


def _template_regex(template: str) -> re.Pattern:
    """A regex matching sentences of ``template``; group ``v`` holds the value."""
    out = re.escape(template)
    for key, pat in ((r"\{S\}", r"(?:[A-Z][a-z]+(?: [A-Z][a-z]+)?)"), (r"\{P\}", "(?:His|Her)"),
                     (r"\{p\}", "(?:his|her)"), (r"\{v\}", r"(?P<v>[^.<>]+?)")):
        out = out.replace(key, pat)
    return re.compile(out)


CLAIM_PATTERNS: list[tuple[str, re.Pattern]] = [
    (rel, _template_regex(t)) for rel, ts in BIO_TEMPLATES.items() for t in ts
]


def parse_claims(text: str) -> list[tuple[str, str]]:
    """The (relation, value) claims a generated biography makes, in order (one per parsable sentence)."""
    claims = []
    for sentence in re.split(r"(?<=\.)\s*", text):
        sentence = sentence.strip()
        for rel, pat in CLAIM_PATTERNS:
            m = pat.fullmatch(sentence)
            if m:
                claims.append((rel, m.group("v").strip()))
                break
    return claims
