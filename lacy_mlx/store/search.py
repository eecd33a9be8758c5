"""The store's searches: vector (the mirror or sqlite-vec's exact scan), keyword (FTS5) and hybrid.

Kept apart from :mod:`lacy_mlx.store.store` (opening, schema, counts) so each file reads in one sitting.
"""
from __future__ import annotations

import json
from pathlib import Path

import apsw
import numpy as np

from lacy_mlx.embed.base import Embedder, check_embeddings
from lacy_mlx.errors import InputError
from lacy_mlx.store.fastpath import MirrorCache
from lacy_mlx.store.filters import Filters, filter_clause
from lacy_mlx.store.keyword import MIN_DEPTH, fts_query, fuse, keyword_search
from lacy_mlx.store.mirror import VectorMirror
from lacy_mlx.store.records import SearchHit, check_unicode

SEARCH_MODES = ("fast", "exact")  # how the vector ranking is computed (a store setting)
RETRIEVAL_MODES = ("vector", "keyword", "hybrid")  # which rankings a search uses (per query)
DEFAULT_TEXT_MODE = "hybrid"  # chosen by benchmarks/retrieval.py (docs/store.md)
MAX_EXACT_K = 4096  # sqlite-vec's KNN limit
RESCORE = (2, 10)  # an int8 mirror's top 2k + 10 candidates are rescored exactly (measured: docs/store.md)


class SearchMixin:
    """Read verbs of :class:`~lacy_mlx.store.Store` that rank chunks for a query."""

    conn: apsw.Connection
    path: Path
    dim: int
    search_mode: str
    embedder: Embedder
    _fast: MirrorCache

    def search(self, query: str | np.ndarray, *, k: int = 5, filters: Filters | None = None,
               fast: bool | None = None, mode: str | None = None, words: str | None = None) -> list[SearchHit]:
        """The ``k`` chunks that best match ``query`` (a text, or a vector of the store's dim), best first.

        ``mode``: ``"vector"`` (cosine to the embedded query), ``"keyword"`` (BM25 over the chunks'
        words; the text is never parsed as FTS5 syntax) or ``"hybrid"`` (both rankings' candidates
        scored by a weighted sum of cosine and relative BM25, ``keyword.fuse``). ``words``: with a
        vector query, the text whose keyword ranking goes with it (a latent query's context). None
        means ``DEFAULT_TEXT_MODE`` when there is text (a text query, or a vector with non-blank
        ``words``) and ``"vector"`` otherwise; keyword and hybrid need text. ``filters`` keeps
        documents whose metadata matches (see ``filter_clause``), applied in every ranking before
        its top-k. ``fast`` picks the in-memory mirror (True) or sqlite-vec's exact scan (False) for
        the vector ranking; None uses the store's mode. ``hit.score`` is the mode's ranking score
        (cosine, BM25 relevance, fused); ``hit.cosine`` and ``hit.bm25`` hold the components where computed.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        is_text = isinstance(query, str)
        if is_text and words is not None:
            raise InputError("words= goes with a vector query: a text query is its own words")
        if is_text and not query.strip():
            raise InputError("the search text is empty: give some words to search for")
        text = query if is_text else (words if isinstance(words, str) and words.strip() else None)
        mode = (DEFAULT_TEXT_MODE if text is not None else "vector") if mode is None else mode
        if mode not in RETRIEVAL_MODES:
            raise InputError(f"mode must be one of {RETRIEVAL_MODES}, got {mode!r}")
        if text is not None:
            check_unicode(text, "the search text")
        elif mode != "vector":
            raise InputError(f"mode={mode!r} needs text: give the query as text, or words=... with the vector")
        if mode == "keyword":
            pairs = keyword_search(self.conn, text, k, filters)
            return self._hits(pairs, bm25=dict(pairs))
        vecs = check_embeddings(self.embedder.embed(query) if is_text else query, self.dim, what="query vector")
        if len(vecs) != 1:
            raise InputError(f"the query vector has shape {tuple(np.shape(query))}: search takes one vector "
                             f"of shape ({self.dim},); search each row separately")
        vec = vecs[0]
        use_fast = (self.search_mode == "fast") if fast is None else fast
        if mode == "vector":
            pairs = self._search_vector(vec, k, filters, use_fast)
            return self._hits(pairs, cosine=dict(pairs))
        depth = max(k, MIN_DEPTH)
        by_vec = self._search_vector(vec, min(depth, MAX_EXACT_K), filters, use_fast, rescore=False)
        by_kw = dict(keyword_search(self.conn, text, depth, filters)) if fts_query(text) is not None else {}
        # Candidates' cosines come from the mirror when it is current (approximate if int8), else from
        # sqlite-vec rowid lookups; with an int8 mirror the k kept are rescored exactly.
        mirror = self._fast.current(self.conn) if use_fast else None
        cosine = dict(by_vec)
        if mirror is not None:
            cosine.update(mirror.score_ids(vec, np.asarray([c for c in by_kw if c not in cosine], dtype=np.int64)))
        cosine.update(self._cosines([c for c in by_kw if c not in cosine], vec))
        fused = fuse(cosine, by_kw, k)
        if mirror is not None and not mirror.exact:
            exact = self._cosines([c for c, _ in fused], vec)
            fused, cosine = fuse(exact, by_kw, k), exact
        return self._hits(fused, cosine=cosine, bm25=by_kw)

    def _search_vector(self, vec: np.ndarray, k: int, filters: Filters | None, use_fast: bool,
                       rescore: bool = True) -> list[tuple[int, float]]:
        return self._search_fast(vec, k, filters, rescore) if use_fast else self._search_exact(vec, k, filters)

    def _cosines(self, ids: list[int], vec: np.ndarray) -> dict[int, float]:
        """Exact cosine of ``vec`` to these chunks' stored vectors (absent ids are left out)."""
        blob = vec.astype(np.float32).tobytes()
        out = {}
        for cid in ids:  # one rowid lookup each: vec0 answers `IN (...)` with a full scan
            rows = self.conn.execute("SELECT vec_distance_cosine(embedding, ?) FROM vectors WHERE chunk_id = ?",
                                     (blob, cid)).fetchall()
            if rows:
                out[int(cid)] = 1.0 - float(rows[0][0])
        return out

    def _search_exact(self, vec: np.ndarray, k: int, filters: Filters | None) -> list[tuple[int, float]]:
        if k > MAX_EXACT_K:
            raise InputError(f"exact search returns at most {MAX_EXACT_K} results (sqlite-vec): ask for fewer, "
                             f"or use the fast path (fast=True)")
        blob = vec.astype(np.float32).tobytes()
        if not filters:
            rows = self.conn.execute(
                "SELECT chunk_id, distance FROM vectors WHERE embedding MATCH ? AND k = ? ORDER BY distance",
                (blob, k),
            ).fetchall()
        else:
            where, params = filter_clause(filters)
            rows = self.conn.execute(
                "SELECT c.id, vec_distance_cosine(v.embedding, ?) AS dist FROM chunks c "
                "JOIN documents d ON d.id = c.document_id JOIN vectors v ON v.chunk_id = c.id "
                f"WHERE {where} ORDER BY dist, c.id LIMIT ?",
                (blob, *params, k),
            ).fetchall()
        return [(int(cid), 1.0 - float(dist)) for cid, dist in rows]

    def _search_fast(self, vec: np.ndarray, k: int, filters: Filters | None,
                     rescore: bool = True) -> list[tuple[int, float]]:
        """Top-``k`` by the mirror; an int8 mirror's candidates are rescored exactly unless ``rescore`` is False."""
        mirror = self._fast.current(self.conn, wait=k > MAX_EXACT_K)
        if mirror is None:  # loading in the background: the exact path answers meanwhile
            return self._search_exact(vec, k, filters)
        allowed = None
        if filters:
            where, params = filter_clause(filters)
            allowed = np.fromiter(
                (r[0] for r in self.conn.execute(
                    f"SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE {where}", params)),
                dtype=np.int64,
            )
        if mirror.exact or not rescore:
            ids, scores = mirror.search(vec, k, allowed)
            return list(zip(ids.tolist(), scores.tolist()))
        ids, _ = mirror.search(vec, RESCORE[0] * k + RESCORE[1], allowed)
        exact = self._cosines(ids.tolist(), vec)
        return sorted(exact.items(), key=lambda item: (-item[1], item[0]))[:k]

    @property
    def _mirror(self) -> VectorMirror | None:
        return self._fast.mirror

    @_mirror.setter
    def _mirror(self, mirror: VectorMirror | None) -> None:
        self._fast.mirror = mirror

    def load_mirror(self) -> VectorMirror:
        """Build (or wait for) the fast path's mirror now, so no later search falls back to the exact scan."""
        mirror = self._fast.current(self.conn, wait=True)
        assert mirror is not None
        return mirror

    def _hits(self, pairs: list[tuple[int, float]], *, cosine: dict[int, float] | None = None,
              bm25: dict[int, float] | None = None) -> list[SearchHit]:
        if not pairs:
            return []
        ids = [cid for cid, _ in pairs]
        rows = self.conn.execute(
            "SELECT c.id, c.text, c.ordinal, c.char_start, c.char_end, d.id, d.external_id, d.title, d.metadata "
            f"FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id IN ({', '.join('?' * len(ids))})",
            ids,
        ).fetchall()
        by_id = {r[0]: r for r in rows}
        hits = []
        for cid, score in pairs:
            r = by_id.get(cid)
            if r is None:  # deleted by another process since the scan
                continue
            hits.append(SearchHit(text=r[1], score=float(score), document_id=r[5], external_id=r[6], title=r[7],
                                  chunk_id=cid, ordinal=r[2], start=r[3], end=r[4], metadata=json.loads(r[8]),
                                  cosine=(cosine or {}).get(cid), bm25=(bm25 or {}).get(cid)))
        return hits
