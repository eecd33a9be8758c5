"""Keyword (FTS5, BM25) and hybrid search on the real store: in step with every write, safe on any text."""
from __future__ import annotations

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import InputError
from lacy_mlx.store import Store, schema
from lacy_mlx.store.keyword import fts_query
from store_checks import assert_indexes_agree

DOCS = [
    {"id": "pump", "text": "The pump controller shows error E-4471 when the firmware checksum fails.", "lang": "en"},
    {"id": "curie", "text": "Marie Curie was born in Warsaw. She won two Nobel prizes.", "lang": "en"},
    {"id": "rhein", "text": "Der Rhein fliesst durch Basel und Köln.", "lang": "de"},
    {"id": "ada", "text": "Ada Lovelace wrote notes on the Analytical Engine in 1843.", "lang": "en"},
]


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "kb.db", embedder=HashedEmbedder(dim=64)) as s:
        s.add_documents(DOCS)
        yield s


def _ids(hits):
    return [h.external_id for h in hits]


def test_keyword_search_finds_words_codes_and_folded_accents(store):
    assert _ids(store.search("E-4471", mode="keyword"))[0] == "pump"
    assert _ids(store.search("koln", mode="keyword")) == ["rhein"]  # case and diacritics folded
    assert _ids(store.search("1843", mode="keyword")) == ["ada"]
    hits = store.search("Lovelace Engine", mode="keyword", k=5)
    assert _ids(hits) == ["ada"] and hits[0].bm25 > 0 and hits[0].cosine is None
    assert store.search("nowhere-to-be-found", mode="keyword") == []


def test_keyword_index_follows_upsert_delete_vacuum(store):
    assert_indexes_agree(store)
    store.add_documents([{"id": "ada", "text": "Ada Lovelace was born in London in 1815."}])  # replaces
    assert store.search("Analytical", mode="keyword") == []
    assert _ids(store.search("London", mode="keyword")) == ["ada"]
    store.add_documents([{"id": f"n{i}", "text": f"Note {i} about zebra{i % 3}."} for i in range(40)])
    assert_indexes_agree(store)
    for i in range(0, 40, 2):
        store.delete(f"n{i}")
    assert {h.external_id for h in store.search("zebra0", mode="keyword", k=50)} == {f"n{i}" for i in range(3, 40, 6)}
    store.vacuum()
    assert_indexes_agree(store)
    assert _ids(store.search("London", mode="keyword")) == ["ada"]


@pytest.mark.parametrize("mode", ["keyword", "hybrid", "vector"])
@pytest.mark.parametrize("fast", [True, False])
def test_filters_apply_to_every_ranking(store, mode, fast):
    hits = store.search("Köln Basel Warsaw", k=5, mode=mode, fast=fast, filters={"lang": "en"})
    assert hits and all(h.metadata["lang"] == "en" for h in hits)
    assert _ids(store.search("Köln Basel", k=5, mode=mode, fast=fast, filters={"lang": "de"})) == ["rhein"]
    assert store.search("Köln", k=5, mode=mode, fast=fast, filters={"lang": "fr"}) == []


def test_hybrid_finds_a_rare_code_that_vector_search_ranks_low(tmp_path):
    # Many passages about the same controller, each with its own error code; the query's other words
    # match them all, so the vector ranking cannot single out the one with the code asked for.
    docs = [{"id": f"e{c}", "text": f"The pump controller manual lists error E-{c} among the pump controller faults."}
            for c in (4417, 4714, 7441, 1447, 4147, 7144, 1744, 4174)]
    docs.append({"id": "target", "text": "Controller error E-4471: firmware checksum mismatch, reflash the board."})
    with Store.open(tmp_path / "codes.db", embedder=HashedEmbedder(dim=256)) as s:
        s.add_documents(docs)
        query = "what does pump controller error E-4471 mean"
        vector = _ids(s.search(query, k=len(docs), mode="vector"))
        assert vector.index("target") >= 3, vector  # the premise: vector search ranks it low
        hybrid = s.search(query, k=3, mode="hybrid")
        assert hybrid[0].external_id == "target"
        assert hybrid[0].cosine is not None and hybrid[0].bm25 > 0 and hybrid[0].score > hybrid[1].score


def test_modes_need_text_and_words(store):
    vec = store.embedder.embed("Marie Curie")
    assert _ids(store.search(vec, k=1))[0] == "curie"  # a vector defaults to vector mode
    for mode in ("keyword", "hybrid"):
        with pytest.raises(InputError, match="needs the query as text"):
            store.search(vec, mode=mode)
    with pytest.raises(InputError, match="no words to match by keyword"):
        store.search("?! -- ()", mode="keyword")
    assert store.search("?! -- ()", mode="hybrid", k=2)  # hybrid falls back to the vector ranking
    with pytest.raises(InputError, match="mode must be one of"):
        store.search("x", mode="bm25")


HOSTILE = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(['"', "'", "*", "(", ")", "NEAR", "NEAR(", "AND", "OR", "NOT", "^", ":", "-", "+",
                              "text:", "{text}", "\x00", "Köln", "東京", "🙂", "a", "1", "NEAR/2", ",", "\\"]),
             max_size=12).map(" ".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=HOSTILE)
def test_hostile_text_is_never_fts_syntax(store, text):
    match = fts_query(text)
    if match is None:
        with pytest.raises(InputError):
            store.search(text, mode="keyword")
        return
    hits = store.search(text, mode="keyword", k=4)  # never an FTS5 syntax error
    assert all(h.bm25 > 0 for h in hits)
    if text.strip():
        store.search(text, mode="hybrid", k=2)


def test_injection_stays_a_word(store):
    # Column filters and operators are words to look for, not syntax: nothing outside the index is reached.
    assert store.search('text:curie OR "warsaw', mode="keyword") != []
    assert store.search("NEAR(curie warsaw) *", mode="keyword")[0].external_id == "curie"
    assert store.count()["documents"] == len(DOCS)


def _downgrade_to_v1(conn: apsw.Connection) -> None:
    """Make the file exactly what schema version 1 wrote: no keyword index, user_version 1."""
    with conn:
        for trig in ("chunks_fts_insert", "chunks_fts_delete", "chunks_fts_update"):
            conn.execute(f"DROP TRIGGER {trig}")
        conn.execute("DROP TABLE chunks_fts")
        conn.execute("PRAGMA user_version = 1")


def test_migration_builds_the_keyword_index_of_an_old_store(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    with Store.open(path, embedder=HashedEmbedder(dim=64)) as s:
        s.add_documents([{"id": f"d{i}", "text": f"Document {i} names the code ZX{i:04d}."} for i in range(25)])
        _downgrade_to_v1(s.conn)
    with pytest.raises(Exception, match="schema upgrade"):
        Store.open(path, read_only=True)
    monkeypatch.setattr(schema, "FTS_BATCH", 10)
    seen = []
    with Store.open(path, progress=lambda what, done, total: seen.append((what, done, total))) as s:
        assert s.stats()["schema_version"] == schema.LATEST
        assert seen == [("keyword index", 10, 25), ("keyword index", 20, 25), ("keyword index", 25, 25)]
        assert_indexes_agree(s)
        assert _ids(s.search("zx0017", mode="keyword")) == ["d17"]


def test_very_common_words_are_left_out_of_large_queries(tmp_path, monkeypatch):
    from lacy_mlx.store import keyword

    with Store.open(tmp_path / "common.db", embedder=HashedEmbedder(dim=32)) as s:
        s.add_documents([{"id": str(i), "text": f"common words here, item {i}" + (" Köln" if i == 7 else "")}
                         for i in range(60)])
        monkeypatch.setattr(keyword, "COMMON_MIN", 5)  # as if the store were large
        assert keyword._drop_common(s.conn, ["common", "koln", "7"]) == ["koln", "7"]
        assert keyword._drop_common(s.conn, ["common", "words"]) in (["common"], ["words"])  # the rarest stays
        assert _ids(s.search("common words Köln", mode="keyword")) == ["7"]
        assert len(s.search("common words", mode="keyword", k=100)) == 60


def test_the_runtime_migrates_an_old_store_it_only_reads(tmp_path):
    """`generate --db` / `chat` open stores read-only; an older store is migrated once first
    (the default store of an earlier version would otherwise refuse every chat)."""
    from lacy_mlx.errors import StoreUpgradeNeeded
    from lacy_mlx.runtime.delegates.retrieval import open_store

    path = tmp_path / "old.db"
    with Store.open(path, embedder=HashedEmbedder(dim=64)) as s:
        s.add_documents([{"id": "d1", "text": "The code ZX0001 names this document."}])
        _downgrade_to_v1(s.conn)
    with pytest.raises(StoreUpgradeNeeded):
        Store.open(path, read_only=True)
    store = open_store(str(path))
    try:
        assert store.stats()["schema_version"] == schema.LATEST
        assert _ids(store.search("zx0001", mode="keyword")) == ["d1"]
    finally:
        store.close()
