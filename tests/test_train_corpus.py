"""The synthetic knowledge base: deterministic, skewed, parseable; the BPE keeps the special tokens."""
import random

import numpy as np

from lacy_mlx.train import corpus
from lacy_mlx.train.bpe import SPECIALS, save_tokenizer, train_bpe
from lacy_mlx.train.copying import choose_inserts
from lacy_mlx.train.data import ROLE_COPY, ROLE_INSERTED, ROLE_PASSAGE, BatchIterator, encode_documents, render_documents
from lacy_mlx.train.labels import RuleTagger


def test_people_are_deterministic_and_zipf_skewed():
    a = corpus.make_people(120, seed=7, max_mentions=30)
    b = corpus.make_people(120, seed=7, max_mentions=30)
    assert [corpus.ground_truth(a)] == [corpus.ground_truth(b)]
    assert corpus.make_people(120, seed=8)[0].name != a[0].name or a[0].facts != corpus.make_people(120, seed=8)[0].facts
    mentions = [p.mentions for p in a]
    assert mentions == sorted(mentions, reverse=True)
    assert mentions[0] == 30 and mentions[-1] == 1
    # Skew: the top 10% of people get more mentions than the bottom half together.
    assert sum(mentions[:12]) > sum(mentions[60:])
    assert len({p.name for p in a}) == len(a)


def test_heldout_people_are_disjoint():
    train = corpus.make_people(50, seed=1)
    held = corpus.make_people(20, seed=2, exclude_names={p.name for p in train})
    assert not {p.name for p in train} & {p.name for p in held}


def test_biography_spans_and_claims_round_trip():
    rng = random.Random(0)
    for person in corpus.make_people(30, seed=3):
        bio = corpus.render_biography(person, rng)
        assert bio.text.startswith(person.name)
        assert {v.relation for v in bio.values} == set(corpus.RELATIONS)
        for v in bio.values:
            assert bio.text[v.start:v.end] == person.facts[v.relation]
        assert dict(corpus.parse_claims(bio.text)) == person.facts


def test_evidence_is_worded_unlike_biographies():
    people = corpus.make_people(10, seed=4)
    records = corpus.evidence_records(people)
    assert len(records) == 10 * len(corpus.RELATIONS)
    for r in records:
        person = next(p for p in people if p.pid == r["metadata"]["person"])
        assert person.facts[r["metadata"]["relation"]] in r["text"]
        assert corpus.parse_claims(r["text"]) == []  # no biography template matches a passage


def test_copy_blocks_hold_the_right_passage_among_distractors():
    people = corpus.make_people(20, seed=5)
    passages = {r["external_id"]: r["text"] for r in corpus.evidence_records(people)}
    rng = random.Random(1)
    bio = corpus.render_biography(people[0], rng)
    for ins in choose_inserts(bio, people[0], people, passages, rng, k=3):
        lines = ins.text.split("\n")
        assert len(lines) == 3
        assert passages[f"{people[0].pid}/{ins.relation}"] in lines
        assert bio.text[ins.char_pos] == " "


def test_copy_curriculum_mixes_block_sizes():
    people = corpus.make_people(20, seed=5)
    passages = {r["external_id"]: r["text"] for r in corpus.evidence_records(people)}
    rng = random.Random(2)
    sizes = set()
    for _ in range(40):
        bio = corpus.render_biography(people[1], rng)
        for ins in choose_inserts(bio, people[1], people, passages, rng, max_facts=3, k=3, k_min=1):
            lines = ins.text.split("\n")
            sizes.add(len(lines))
            assert passages[f"{people[1].pid}/{ins.relation}"] in lines
    assert sizes == {1, 2, 3}


def test_bpe_specials_and_copy_roles(tmp_path):
    people = corpus.make_people(30, seed=6, max_mentions=5)
    records = corpus.evidence_records(people)
    index = {r["external_id"]: i for i, r in enumerate(records)}
    docs = render_documents(people, seed=0, copy_fraction=1.0,
                            passages={r["external_id"]: r["text"] for r in records})
    tok = train_bpe((d.bio.text for d in docs), 400)
    assert [tok.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3]
    assert tok.encode("born in<CALL> Lyon", add_special_tokens=False).ids.count(1) == 1
    stream = encode_documents(docs, tok, RuleTagger(), index)
    call_pos = stream.ids == 1
    assert call_pos.sum() >= len(docs)  # every document carries at least one evidence block
    assert (stream.role[call_pos] == ROLE_INSERTED).all()
    assert (stream.role == ROLE_COPY).any() and (stream.span[stream.role != 0] == 0).all()
    # Passage text sits between the delimiters; the specials themselves are never targets.
    starts, ends = np.flatnonzero(stream.ids == 2), np.flatnonzero(stream.ids == 3)
    assert (stream.role[starts] == ROLE_INSERTED).all() and (stream.role[ends] == ROLE_INSERTED).all()
    assert all((stream.role[a + 1:b] == ROLE_PASSAGE).all() for a, b in zip(starts, ends))
    for evidence_lm in (False, True):
        b = BatchIterator(stream, batch_size=4, seq_len=64, seed=0, evidence_lm=evidence_lm).make_batch(np.arange(4))
        passage = np.isin(stream.role[1:][(np.arange(4)[:, None] * 64 + np.arange(64))], [ROLE_PASSAGE])
        assert (b.weight[passage] == float(evidence_lm)).all() and b.full[passage].all()
        assert not b.copy[passage].any() and not b.eligible[passage].any()
    save_tokenizer(tok, tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "tokenizer_config.json").is_file()
