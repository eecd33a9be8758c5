"""Latent consistency, measured: does the query tower find the right evidence passage?

The training loss lives in :func:`lacy_mlx.train.trainer.make_loss` (InfoNCE of the tower's
vector at each position that predicts a fact value against all training passages' embeddings,
temperature ``tower_temperature``, weight ``tower_weight``). Here: recall@k on any people, e.g.
held-out ones never seen in training, against their own passages.
"""
from __future__ import annotations

import random

import mlx.core as mx
import numpy as np
from tokenizers import Tokenizer

from lacy_mlx.query_tower import QueryTower
from lacy_mlx.train.corpus import Person, evidence_records, render_biography
from lacy_mlx.train.data import Document, encode_documents
from lacy_mlx.train.labels import RuleTagger


def fact_queries(lm, tok: Tokenizer, people: list[Person], *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Hidden states ``(n, H)`` at positions predicting a fact value, their passage rows, and the passages."""
    records = evidence_records(people, seed)
    index = {r["external_id"]: i for i, r in enumerate(records)}
    rng = random.Random(seed)
    hs, golds = [], []
    for person in people:
        doc = Document(render_biography(person, rng), [])
        s = encode_documents([doc], tok, RuleTagger(), index)
        h = lm.model(mx.array(s.ids)[None])[0]  # (T, H)
        pos = np.flatnonzero(s.gold[1:] >= 0)
        hs.append(np.array(h[mx.array(pos)].astype(mx.float32)))
        golds.append(s.gold[1:][pos])
    return np.concatenate(hs), np.concatenate(golds), records


def recall_at_k(tower: QueryTower, hidden: np.ndarray, gold: np.ndarray, table: np.ndarray, k: int = 5) -> float:
    """Share of queries whose gold passage is among the ``k`` nearest rows of ``table`` (cosine)."""
    q = np.array(tower(mx.array(hidden)))
    top = np.argsort(-(q @ table.T), axis=1)[:, :k]
    return float(np.mean([g in row for g, row in zip(gold, top)]))
