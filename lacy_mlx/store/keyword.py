"""Keyword search over the store's FTS5 index (BM25), and the score fusion that makes search hybrid.

User text never reaches FTS5's query language as such: every whitespace-separated word becomes a
double-quoted string (quotes doubled), which FTS5 reads as a phrase of that word's tokens, and the
phrases are OR-ed, so operators, ``*``, ``NEAR``, parentheses and column filters in the text are
plain words. BM25 then weighs rare words (names, codes, numbers) far above common ones.

FTS5 ranks every chunk that matches any phrase, so one very common word makes a query slow in
a large store (seconds at a million chunks) while adding almost nothing to BM25 (its IDF is near
0). Words found in more than ``COMMON_SHARE`` of the chunks (and more than ``COMMON_MIN`` of
them) are therefore left out of the query, unless every word is that common.
"""
from __future__ import annotations

import apsw

from lacy_mlx.errors import InputError
from lacy_mlx.store.filters import Filters, filter_clause
from lacy_mlx.store.schema import FTS_TOKENIZER

COMMON_SHARE, COMMON_MIN = 0.1, 10_000
KEYWORD_WEIGHT = 0.2  # chosen with benchmarks/retrieval.py (docs/store.md)
MIN_DEPTH = 50  # candidates taken from each ranking before fusing


def _words(text: str) -> list[str]:
    # FTS5 ends a query string at NUL; lone surrogates cannot be encoded as UTF-8.
    clean = text.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")
    return list(dict.fromkeys(w for w in clean.split() if any(ch.isalnum() for ch in w)))


def _phrase(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def fts_query(text: str) -> str | None:
    """The FTS5 MATCH expression for ``text``: its words as quoted phrases OR-ed; None if no word has a letter or digit."""
    words = _words(text)
    return " OR ".join(map(_phrase, words)) if words else None


def _drop_common(conn: apsw.Connection, words: list[str]) -> list[str]:
    """``words`` without those too common to be worth ranking (module docstring); the rarest stays."""
    chunks = int(conn.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchall()[0][0])  # an upper bound
    limit = max(COMMON_SHARE * chunks, COMMON_MIN)
    if chunks <= limit or not hasattr(conn, "fts5_tokenizer"):
        return words
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_fts_vocab USING fts5vocab(main, chunks_fts, row)")
    name, *args = FTS_TOKENIZER.split()
    tokenize = conn.fts5_tokenizer(name, args)  # the index's own tokenizer: the same terms
    df: dict[str, int] = {}
    for word in words:  # a phrase is at most as common as its rarest token
        tokens = [t[2] for t in tokenize(word.encode("utf-8"), apsw.FTS5_TOKENIZE_QUERY, None)]
        counts = [conn.execute("SELECT doc FROM temp.chunks_fts_vocab WHERE term = ?", (t,)).fetchall() for t in tokens]
        df[word] = min((c[0][0] if c else 0 for c in counts), default=0)
    kept = [w for w in words if df[w] <= limit]
    return kept or [min(words, key=lambda w: df[w])]


def keyword_search(conn: apsw.Connection, text: str, k: int, filters: Filters | None) -> list[tuple[int, float]]:
    """Top-``k`` ``(chunk id, relevance)`` by BM25 (SQLite's ``bm25()`` negated: higher is better), best first.

    Raises InputError when ``text`` has no word to match.
    """
    words = _words(text)
    if not words:
        raise InputError(f"the search text {text!r} has no words to match by keyword: give a word or number, "
                         f"or search with mode='vector'")
    match = " OR ".join(map(_phrase, _drop_common(conn, words)))
    where, params = filter_clause(filters)
    join = "JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.document_id " if filters else ""
    rows = conn.execute(
        f"SELECT chunks_fts.rowid, bm25(chunks_fts) AS s FROM chunks_fts {join}"
        f"WHERE chunks_fts MATCH ? AND {where} ORDER BY s, chunks_fts.rowid LIMIT ?",
        (match, *params, k),
    ).fetchall()
    return [(int(cid), -float(score)) for cid, score in rows]


def fuse(cosine: dict[int, float], bm25: dict[int, float], k: int,
         weight: float = KEYWORD_WEIGHT) -> list[tuple[int, float]]:
    """Hybrid scores ``(1 - weight) * cosine + weight * bm25 / max(bm25)``; top ``k``, ties by chunk id.

    ``cosine`` must hold every candidate; ``bm25`` those that matched a word (the others count 0).
    A convex combination of scores, not reciprocal rank fusion: ranks alone cannot tell a query
    whose one rare word (a code, a name) singles out a chunk from one whose words are all common,
    while the BM25 ratio to the best match can (measured in docs/store.md).
    """
    top = max(bm25.values(), default=0.0)
    scores = {cid: (1.0 - weight) * cos + (weight * bm25.get(cid, 0.0) / top if top > 0 else 0.0)
              for cid, cos in cosine.items()}
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
