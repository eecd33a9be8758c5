"""Everything a training run needs before its first step, built deterministically from the config.

Files written under ``out_dir`` (reused on ``--resume`` so a resumed run sees the same data):
``tokenizer.json`` + ``tokenizer_config.json``, ``data/ground_truth.json`` (training people),
``data/heldout.json`` (unseen people), ``data/evidence.jsonl`` (one passage per fact of both, the
documents a demo ingests into a store) and ``data/passages.npy`` (their embeddings, row for row;
the training people's rows are the query tower's InfoNCE targets).
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from lacy_mlx.embed import Embedder, default_embedder, resolve_embedder
from lacy_mlx.train import corpus
from lacy_mlx.train.bpe import load_tokenizer, save_tokenizer, train_bpe
from lacy_mlx.train.config import TrainConfig
from lacy_mlx.train.data import TokenStream, encode_documents, render_documents
from lacy_mlx.train.labels import make_tagger


@dataclass
class Prepared:
    people: list[corpus.Person]
    heldout: list[corpus.Person]
    passages: list[dict]            # training people's evidence records, in passage-index order
    passage_index: dict[str, int]   # external_id -> row of ``embeddings``
    tokenizer: Tokenizer
    stream: TokenStream
    embeddings: np.ndarray | None   # (N, D) float32, None when the tower is off
    embedder_name: str | None


def make_embedder(name: str) -> Embedder:
    """``"default"`` -> :func:`default_embedder` (MiniLM when installed, else hashed); else by registry name."""
    return default_embedder() if name == "default" else resolve_embedder(name)


def people_for(cfg: TrainConfig) -> tuple[list[corpus.Person], list[corpus.Person]]:
    """Training people and held-out people (a different seed, disjoint names)."""
    people = corpus.make_people(cfg.people, cfg.corpus_seed, max_mentions=cfg.max_mentions, zipf_s=cfg.zipf_s)
    heldout = corpus.make_people(cfg.heldout_people, cfg.heldout_seed, max_mentions=1,
                                 exclude_names={p.name for p in people})
    return people, heldout


def prepare(cfg: TrainConfig, out_dir: str | Path, *, write: bool = True, eot_id: int | None = None,
            tokenizer_dir: str | Path | None = None) -> Prepared:
    """Build (or, when ``out_dir`` already holds them, reload) the corpus, tokenizer and targets.

    The tokenizer comes from ``tokenizer_dir`` when given (fine-tuning: the base model's), else from
    ``out_dir`` when the writing process (rank 0) finds one there, else BPE training on the corpus
    (deterministic, so other ranks train the same one instead of racing rank 0's file).
    """
    out = Path(out_dir)
    data_dir = out / "data"
    people, heldout = people_for(cfg)
    records = corpus.evidence_records(people, cfg.corpus_seed)
    index = {r["external_id"]: i for i, r in enumerate(records)}
    texts = {r["external_id"]: r["text"] for r in records}
    docs = render_documents(people, seed=cfg.corpus_seed, copy_fraction=cfg.copy_fraction,
                            evidence_k=cfg.evidence_k, evidence_k_min=cfg.evidence_k_min,
                            copy_facts=cfg.copy_facts, passages=texts)
    if tokenizer_dir is not None:
        tok = load_tokenizer(tokenizer_dir)
    elif write and (out / "tokenizer.json").is_file():
        tok = load_tokenizer(out)
    else:
        # Passages too: the model reads them inside evidence blocks, and a vocabulary of biographies
        # alone spells record words letter by letter ("st|af|f|d|ir|ec|t|or|y").
        tok = train_bpe(itertools.chain((d.bio.text for d in docs), texts.values()), cfg.vocab_size)
        if write:
            save_tokenizer(tok, out)
    stream = encode_documents(docs, tok, make_tagger(cfg.tagger), index, eot_id=eot_id)
    all_records = records + corpus.evidence_records(heldout, cfg.heldout_seed)
    emb, emb_name = None, None
    if cfg.tower_weight > 0:
        emb, emb_name = _passage_embeddings(cfg, all_records, data_dir, write)
        emb = emb[: len(records)]  # the tower's InfoNCE table: training people's passages
    if write:
        data_dir.mkdir(parents=True, exist_ok=True)
        corpus.write_ground_truth(data_dir / "ground_truth.json", people)
        corpus.write_ground_truth(data_dir / "heldout.json", heldout)
        with open(data_dir / "evidence.jsonl", "w", encoding="utf-8") as f:
            for r in all_records:
                f.write(json.dumps(r) + "\n")
    return Prepared(people, heldout, records, index, tok, stream, emb, emb_name)


def _passage_embeddings(cfg: TrainConfig, records: list[dict], data_dir: Path,
                        write: bool) -> tuple[np.ndarray, str]:
    cache, meta = data_dir / "passages.npy", data_dir / "passages.json"
    if cache.is_file() and meta.is_file():
        return np.load(cache), json.loads(meta.read_text())["embedder"]
    embedder = make_embedder(cfg.embedder)
    emb = np.concatenate(list(embedder.embed_iter((r["text"] for r in records), 64))).astype(np.float32)
    if write:
        data_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, emb)
        meta.write_text(json.dumps({"embedder": embedder.name, "count": len(records)}) + "\n")
    return emb, embedder.name
