"""Retrieval delegate: search the knowledge store with a query built at the call.

Two query builders:

- :class:`TextQuery` (FLARE): the current sentence with its low-confidence tokens masked out
  (tokens the SLM was unsure of are likely wrong and would steer the search), prefixed with the
  question's tail when too few words remain.
- :class:`LatentQuery`: a :class:`~lacy_mlx.query_tower.QueryTower` maps the SLM's hidden state
  at the call into the store embedder's space: no encoder pass over any text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from lacy_mlx.errors import InputError, StoreUpgradeNeeded
from lacy_mlx.query_tower import QueryTower
from lacy_mlx.runtime.delegates.base import CallContext, Help
from lacy_mlx.runtime.kinds import DelegateKind, QueryKind, RetrievalMode
from lacy_mlx.sentences import last_sentence

_WORDS = re.compile(r"\w+", re.UNICODE)
# Words that name nothing by themselves: a query made of them alone needs the question's subject.
_FUNCTION_WORDS = frozenset(
    "a an the he she it they we you i his her its their our my your this that these those was were is are be "
    "been being has have had do did does in on at of to by for from with as and or but so then there here "
    "which who whom whose what when where why how also not no".split()
)
_SPECIAL = re.compile(r"<\|[^|>]*\|>")  # control tokens such as <|endoftext|> in a raw prompt


@dataclass(frozen=True)
class TextQuery:
    """FLARE-style text query.

    Tokens of the current sentence whose top-1 probability is below ``mask_below`` are dropped.
    When fewer than ``min_words`` content words remain (function words such as "she", "was",
    "a" do not count: "She was a" or "She was born in" names no subject, the question does), or
    always with ``anchor=True``, the last sentence of the question is put in front. The query
    keeps at most ``max_chars`` characters (its end).
    """

    mask_below: float = 0.4
    min_words: int = 3
    max_chars: int = 400
    anchor: bool = False
    needs_hidden = False

    def build(self, ctx: CallContext) -> str:
        kept = [t for t, c in zip(ctx.sentence_tokens, ctx.sentence_confidence) if not c < self.mask_below]
        masked = "".join(kept).strip()
        topic = _SPECIAL.sub("", last_sentence(ctx.question)).strip()
        content = [w for w in _WORDS.findall(masked) if w.lower() not in _FUNCTION_WORDS]
        if (self.anchor or len(content) < self.min_words) and topic not in masked:
            masked = f"{topic} {masked}".strip()
        if not masked:  # nothing usable: the tail of all text so far
            masked = (ctx.question + " " + ctx.text).strip()
        return masked[-self.max_chars :]


@dataclass(frozen=True)
class LatentQuery:
    """Query-tower query: ``tower(hidden state at the call)`` -> a unit vector of the store's dim."""

    tower: QueryTower
    needs_hidden = True

    def build(self, ctx: CallContext) -> np.ndarray:
        if ctx.hidden is None:
            raise InputError("the latent query needs the SLM's hidden state; the runtime did not keep it")
        vec = self.tower(ctx.hidden.reshape(1, -1).astype(mx.float32))  # (1, D)
        return np.array(vec[0].astype(mx.float32), dtype=np.float32)


class RetrievalDelegate:
    """Search ``store`` at each call; the hits become evidence.

    ``store``: a :class:`lacy_mlx.store.Store` (or any object with its ``search``), or the path of
    one, opened read-only (an older store is migrated first). ``query``: ``"text"``, ``"latent"``
    (needs ``tower``), or a builder object with ``build(ctx)`` and ``needs_hidden``. ``k`` hits
    are kept, those whose cosine is below ``min_score`` dropped (keyword-only hits have no cosine
    and stay). ``filters`` and ``mode`` (None: the store's default, hybrid for text queries and
    vector for latent ones) are passed to ``store.search``.

    ``query``, ``tower`` and ``k`` left None are the model's to choose when :func:`lacy_mlx.load`
    wires the delegate (its config.json ``lacy.retrieval`` section, or the query tower saved
    beside it; see :meth:`with_defaults`); used directly, they mean ``"text"`` and 3.
    """

    kind: DelegateKind = "retrieval"

    def __init__(
        self,
        store: Any,
        *,
        query: QueryKind | TextQuery | LatentQuery | None = None,
        tower: QueryTower | None = None,
        k: int | None = None,
        min_score: float | None = None,
        filters: dict[str, Any] | None = None,
        mode: RetrievalMode | None = None,
        name: str = "retrieval",
    ) -> None:
        if isinstance(k, bool) or k is not None and (not isinstance(k, int) or k < 1):
            raise InputError(f"k must be a positive whole number of hits (or None), got {k!r}")
        self.store = open_store(store) if isinstance(store, (str, Path)) else store
        self.chosen = {"query": query, "tower": tower, "k": k}  # as given (None: left to the model)
        # A latent query without a tower waits for the model's (load() supplies it); used so, it says what is missing.
        pending = query == "latent" and tower is None
        self.builder = None if pending else _builder("text" if query is None else query, tower, self.store)
        self.k = 3 if k is None else k
        self.min_score = min_score
        self.filters = filters
        self.mode = mode
        self.name = name

    def with_defaults(self, *, query: QueryKind | TextQuery | LatentQuery | None = None,
                      tower: QueryTower | None = None, k: int | None = None) -> RetrievalDelegate:
        """This delegate with the options it was built without (None) set to these; itself when none changes."""
        chosen = {key: mine if mine is not None else theirs
                  for (key, mine), theirs in zip(self.chosen.items(), (query, tower, k))}
        if chosen == self.chosen:
            return self
        return RetrievalDelegate(self.store, **chosen, min_score=self.min_score, filters=self.filters,
                                 mode=self.mode, name=self.name)

    @property
    def needs_hidden(self) -> bool:
        return self.builder is None or bool(self.builder.needs_hidden)

    @property
    def query_kind(self) -> QueryKind:
        return "latent" if self.builder is None or isinstance(self.builder, LatentQuery) else "text"

    def __call__(self, ctx: CallContext) -> Help:
        builder = self.builder if self.builder is not None else _builder("latent", None, self.store)  # raises
        q = builder.build(ctx)
        extra = {} if self.mode is None else {"mode": self.mode}
        hits = self.store.search(q, k=self.k, filters=self.filters, **extra)
        if self.min_score is not None:
            hits = [h for h in hits if _cosine(h) is None or _cosine(h) >= self.min_score]
        shown = q if isinstance(q, str) else "<latent>"
        return Help(
            kind="evidence",
            passages=tuple(h.text for h in hits),
            sources=tuple(_source(h) for h in hits),
            query=shown,
            hits=tuple(hits),
        )


def _builder(query: Any, tower: QueryTower | None, store: Any) -> Any:
    if query == "text":
        return TextQuery()
    if query == "latent":
        if tower is None:
            raise InputError(
                "the latent query needs a query tower (query_tower.safetensors beside the model, trained by "
                "`lacy-mlx train`; in Python QueryTower.load(model_dir)); without one use query='text'"
            )
        dim = getattr(store, "dim", tower.embed_dim)
        if tower.embed_dim != dim:
            raise InputError(
                f"the query tower emits {tower.embed_dim}-dim vectors but the store holds {dim}-dim "
                "ones: use the store built with the tower's embedder"
            )
        return LatentQuery(tower)
    if hasattr(query, "build"):
        return query
    raise InputError(f"query must be 'text', 'latent' or a builder with build(ctx); got {query!r}")


def open_store(path: str | Path, embedder: Any = None) -> Any:
    """The store at ``path`` opened read-only for retrieval (generation only reads it); an older
    store is migrated by one writable open first (which fails clearly where it cannot write)."""
    from lacy_mlx.store import Store  # the store's own imports (sqlite-vec, apsw) load only when one is opened

    try:
        return Store.open(path, embedder=embedder, create=False, read_only=True)
    except StoreUpgradeNeeded:
        Store.open(path, embedder=embedder, create=False).close()
        return Store.open(path, embedder=embedder, create=False, read_only=True)


def _cosine(hit: Any) -> float | None:
    """A hit's cosine similarity: ``hit.cosine`` from a lacy store, else ``hit.score`` (any other store)."""
    return getattr(hit, "cosine", hit.score)


def _source(hit: Any) -> str:
    return hit.title or hit.external_id or f"document {hit.document_id}"
