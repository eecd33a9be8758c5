"""From people to training batches: render documents, tokenize, label, pack, shard.

Per token of the packed stream (all int32 arrays of one length):
- ``ids``: token ids; documents are each preceded by ``<|endoftext|>``.
- ``span``: a stream-unique factual-span number from the tagger (0 = not factual, not eligible, or
  a phrase repeated from earlier in the document, which the context already supplies).
- ``role``: 0 text, 1 a special token the runtime inserts (``<CALL>``, the delimiters: never a
  target), 2 a value copied from evidence (a full-softmax target, never a call), 3 passage text
  inside an evidence block (the runtime supplies it too: a full-softmax target only with
  ``evidence_lm``, which gives the model dense practice at reading passages and at repeating the
  subject's name from earlier in the document: the induction circuits copying needs).
- ``gold``: index of the evidence passage whose value starts at this token (or at the ``<CALL>`` put
  before it), else -1; the query tower learns at the positions that predict these tokens.

Rows are windows of ``seq_len + 1`` tokens with stride ``seq_len``; an epoch visits them in a
permutation seeded by ``(seed, epoch)``, so a data position ``(epoch, batch)`` replays exactly.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from lacy_mlx.errors import InputError
from lacy_mlx.tokens import END_OF_TEXT, special_ids
from lacy_mlx.train.copying import Insert, choose_inserts
from lacy_mlx.train.corpus import Biography, Person, evidence_records, render_biography
from lacy_mlx.train.labels import Tagger, align_spans

ROLE_TEXT, ROLE_INSERTED, ROLE_COPY, ROLE_PASSAGE = 0, 1, 2, 3


@dataclass
class Document:
    bio: Biography
    inserts: list[Insert]


@dataclass
class TokenStream:
    ids: np.ndarray
    span: np.ndarray
    role: np.ndarray
    gold: np.ndarray


def render_documents(people: list[Person], *, seed: int, copy_fraction: float, evidence_k: int = 3,
                     passages: dict[str, str] | None = None, evidence_k_min: int | None = None,
                     copy_facts: int = 2) -> list[Document]:
    """Every mention of every person as a biography; ``copy_fraction`` of them carry 1..``copy_facts``
    evidence blocks of ``evidence_k_min..evidence_k`` passages (see :func:`choose_inserts`)."""
    rng = random.Random(seed)
    passages = passages or {r["external_id"]: r["text"] for r in evidence_records(people, seed)}
    docs = []
    for person in people:
        for _ in range(person.mentions):
            bio = render_biography(person, rng)
            inserts = []
            if rng.random() < copy_fraction:
                inserts = choose_inserts(bio, person, people, passages, rng, max_facts=copy_facts,
                                         k=evidence_k, k_min=evidence_k_min)
            docs.append(Document(bio, inserts))
    rng.shuffle(docs)
    return docs


def encode_documents(docs: list[Document], tok: Tokenizer, tagger: Tagger,
                     passage_index: dict[str, int], *, eot_id: int | None = None) -> TokenStream:
    """Tokenize, tag and concatenate ``docs`` into one :class:`TokenStream`.

    ``eot_id`` separates documents (default: the tokenizer's ``<|endoftext|>``; pass the eos id of a
    foreign tokenizer that lacks it).
    """
    specials = special_ids(tok)
    eot = eot_id if eot_id is not None else tok.token_to_id(END_OF_TEXT)
    if not specials.inline_capable or eot is None:
        raise InputError("the tokenizer lacks <CALL>, <EVIDENCE> or </EVIDENCE> (or an end-of-text id): "
                         "add them first with lacy-mlx's <CALL> token surgery (lacy-mlx convert)")
    ids, span, role, gold = [eot], [0], [0], [-1]
    span_base = 0
    for doc in docs:
        text = doc.bio.text
        local = align_spans(_offsets(tok, text), _lookup_spans(text, tagger.tag(text)))
        value_gold = {v.start: passage_index.get(f"{doc.bio.pid}/{v.relation}", -1) for v in doc.bio.values}
        value_ends = {v.start - 1: v.end for v in doc.bio.values}
        cuts = [0] + [ins.char_pos for ins in doc.inserts] + [len(text)]
        by_pos = {ins.char_pos: ins for ins in doc.inserts}
        t_global = 0  # index into `local` (tokens of the plain text, pieces concatenated)
        for a, b in zip(cuts[:-1], cuts[1:]):
            ins = by_pos.get(a)
            if ins is not None:
                g = value_gold.get(a + 1, -1)
                body = tok.encode(ins.text, add_special_tokens=False).ids
                block = [specials.call, *specials.evidence_block(body)]  # what the runtime injects
                ids += block
                span += [0] * len(block)
                role += [ROLE_INSERTED] * 2 + [ROLE_PASSAGE] * len(body) + [ROLE_INSERTED]
                gold += [g] + [-1] * (len(block) - 1)
            enc = tok.encode(text[a:b], add_special_tokens=False)
            copy_end = value_ends.get(a) if ins is not None else None
            for tid, (s, e) in zip(enc.ids, enc.offsets):
                s, e = s + a, e + a
                copying = copy_end is not None and s < copy_end
                lid = int(local[t_global]) if t_global < len(local) else 0
                ids.append(tid)
                role.append(ROLE_COPY if copying else ROLE_TEXT)
                span.append(0 if copying or lid == 0 else span_base + lid)
                gold.append(-1 if copying else _gold_at(s, e, value_gold))
                t_global += 1
        span_base += int(local.max(initial=0)) + 1
        ids.append(eot)
        span.append(0)
        role.append(0)
        gold.append(-1)
    return TokenStream(*(np.asarray(x, dtype=np.int32) for x in (ids, span, role, gold)))


def _lookup_spans(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Factual spans worth a call: a phrase already written earlier in the document (the subject's
    name, repeated) can be copied from the context, so it is not a lookup."""
    return [(s, e) for s, e in spans if text[s:e] not in text[:s]]


def _offsets(tok: Tokenizer, text: str) -> list[tuple[int, int]]:
    return tok.encode(text, add_special_tokens=False).offsets


def _gold_at(s: int, e: int, value_gold: dict[int, int]) -> int:
    """The passage of a value starting inside this token's characters (its leading space included)."""
    for pos in (s, s + 1):
        if pos in value_gold and pos < e:
            return value_gold[pos]
    return -1


@dataclass
class Batch:
    """Numpy arrays of one (rank-local) batch; shapes ``(B, T)`` unless noted."""

    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray      # float32: 1 where the target is trained
    full: np.ndarray        # bool: full-softmax targets (copied values; passage text with evidence_lm)
    copy: np.ndarray        # bool: copied values
    eligible: np.ndarray    # bool: ordinary text targets (may be chosen as calls)
    span: np.ndarray        # int32: batch-local factual span 1..S, 0 = none
    first: np.ndarray       # bool: first token of its span
    tower_idx: np.ndarray   # (M,) int32 flat positions (b*T + t) that predict a gold value
    tower_gold: np.ndarray  # (M,) int32 passage index
    tower_mask: np.ndarray  # (M,) float32

    def arrays(self) -> tuple:
        return (self.x, self.y, self.weight, self.full, self.copy, self.eligible, self.span, self.first,
                self.tower_idx, self.tower_gold, self.tower_mask)


class BatchIterator:
    """Deterministic batches over a :class:`TokenStream`; ``position`` = (epoch, batch) to resume from."""

    def __init__(self, stream: TokenStream, *, batch_size: int, seq_len: int, seed: int,
                 tower_slots: int = 64, rank: int = 0, world: int = 1, evidence_lm: bool = False) -> None:
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world}")
        self.s, self.B, self.T, self.seed = stream, batch_size, seq_len, seed
        self.M, self.rank, self.world = tower_slots, rank, world
        self.evidence_lm = evidence_lm
        self.n_rows = (len(stream.ids) - 1) // seq_len
        self.per_epoch = self.n_rows // batch_size
        if self.per_epoch < 1:
            raise ValueError(f"the corpus gives {self.n_rows} rows of {seq_len} tokens, fewer than one "
                             f"batch of {batch_size}: use more people, a smaller batch or shorter rows")
        self.epoch, self.index = 0, 0

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.index}

    def seek(self, position: dict) -> None:
        self.epoch, self.index = int(position["epoch"]), int(position["batch"])

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> Batch:
        if self.index >= self.per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_rows)
        rows = perm[self.index * self.B:(self.index + 1) * self.B][self.rank::self.world]
        self.index += 1
        return self.make_batch(rows)

    def make_batch(self, rows: np.ndarray) -> Batch:
        T = self.T
        win = rows[:, None] * T + np.arange(T + 1)[None, :]  # (b, T+1)
        ids, span, role, gold = (a[win] for a in (self.s.ids, self.s.span, self.s.role, self.s.gold))
        r_y, s_y = role[:, 1:], span[:, 1:]
        _, inv = np.unique(s_y, return_inverse=True)
        inv = inv.reshape(s_y.shape).astype(np.int32)
        local = np.where(s_y > 0, inv + (0 if (s_y == 0).any() else 1), 0).astype(np.int32)
        prev = np.concatenate([np.zeros((local.shape[0], 1), np.int32), local[:, :-1]], axis=1)
        g = gold[:, 1:].reshape(-1)
        pos = np.flatnonzero(g >= 0)[: self.M]
        idx = np.zeros(self.M, np.int32)
        idx[: len(pos)] = pos
        mask = np.zeros(self.M, np.float32)
        mask[: len(pos)] = 1
        return Batch(
            x=ids[:, :-1].astype(np.int32), y=ids[:, 1:].astype(np.int32),
            weight=((r_y != ROLE_INSERTED) & (self.evidence_lm | (r_y != ROLE_PASSAGE))).astype(np.float32),
            full=(r_y == ROLE_COPY) | (r_y == ROLE_PASSAGE), copy=r_y == ROLE_COPY,
            eligible=r_y == ROLE_TEXT, span=local, first=(local > 0) & (local != prev),
            tower_idx=idx, tower_gold=np.where(mask > 0, g[idx], 0).astype(np.int32), tower_mask=mask,
        )
