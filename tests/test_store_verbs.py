"""The store's verbs on real sqlite-vec: add/upsert, get, delete, search (exact and fast), stats, vacuum."""
from __future__ import annotations

import numpy as np
import pytest

from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import StoreError
from lacy_mlx.store import DocumentInput, Store, schema

DOCS = [
    {"id": "curie", "text": "Marie Curie was born in Warsaw. She won two Nobel prizes.", "lang": "en", "year": 1867},
    {"id": "ada", "text": "Ada Lovelace wrote notes on the Analytical Engine in 1843.", "lang": "en", "year": 1815},
    {"id": "rhein", "text": "Der Rhein fliesst durch Basel und Köln.", "lang": "de", "year": 0},
]


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "kb.db", embedder=HashedEmbedder(dim=64)) as s:
        s.add_documents(DOCS)
        yield s


def test_add_get_count(store):
    assert store.count() == {"documents": 3, "chunks": 3, "vectors": 3}
    doc = store.get("curie")
    assert doc is not None and doc.metadata == {"lang": "en", "year": 1867}
    assert doc.chunks[0].text == DOCS[0]["text"][doc.chunks[0].start : doc.chunks[0].end]
    assert store.get(doc.id).external_id == "curie"
    assert store.get("nobody") is None


def test_upsert_by_external_id_and_hash(store):
    again = store.add_documents(DOCS)
    assert (again.added, again.unchanged) == (0, 3)
    changed = store.add_documents([{"id": "ada", "text": "Ada Lovelace was born in London in 1815."}])
    assert changed.replaced == 1
    assert store.count()["chunks"] == 3 and "London" in store.get("ada").chunks[0].text
    # Without an external id, the same text is recognised by its content hash.
    assert store.add_documents(["A note without id."]).added == 1
    assert store.add_documents(["A note without id."]).unchanged == 1
    assert store.count()["documents"] == 4


def test_delete_removes_chunks_and_vectors(store):
    assert store.delete("rhein") is True
    assert store.delete("rhein") is False
    assert store.count() == {"documents": 2, "chunks": 2, "vectors": 2}
    assert all(h.external_id != "rhein" for h in store.search("Basel Köln", k=3))


@pytest.mark.parametrize("fast", [True, False])
def test_search_text_vector_filters(store, fast):
    hits = store.search("Where was Marie Curie born?", k=2, fast=fast)
    assert hits[0].external_id == "curie" and hits[0].score > hits[1].score
    assert (hits[0].ordinal, hits[0].start) == (0, 0) and hits[0].metadata["lang"] == "en"
    vec = store.embedder.embed("Analytical Engine")
    assert store.search(vec, k=1, fast=fast)[0].external_id == "ada"
    assert [h.external_id for h in store.search("Basel", k=5, filters={"lang": "de"}, fast=fast)] == ["rhein"]
    assert {h.external_id for h in store.search("x", k=5, filters={"year": [1815, 0]}, fast=fast)} == {"ada", "rhein"}
    assert store.search("Basel", k=5, filters={"lang": "fr"}, fast=fast) == []


def test_exact_and_fast_match_numpy_topk(tmp_path):
    rng = np.random.default_rng(0)
    dim, n, k = 32, 600, 10
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs = [DocumentInput(chunks=[f"chunk {i}"], vectors=vecs[i : i + 1], external_id=str(i)) for i in range(n)]
    with Store.open(tmp_path / "r.db", embedder=HashedEmbedder(dim=dim)) as s:
        s.add_documents(docs, batch_size=200)
        for q in rng.standard_normal((5, dim)).astype(np.float32):
            qn = q / np.linalg.norm(q)
            want = [str(i) for i in np.argsort(-(vecs.astype(np.float64) @ qn))[:k]]
            for fast in (True, False):
                hits = s.search(q, k=k, fast=fast)
                assert [h.external_id for h in hits] == want
                np.testing.assert_allclose([h.score for h in hits], np.sort(vecs @ qn)[::-1][:k], atol=1e-5)


def test_fast_mirror_follows_own_and_foreign_writes(tmp_path):
    path = tmp_path / "m.db"
    with Store.open(path, embedder=HashedEmbedder(dim=64)) as a, Store.open(path) as b:
        a.add_documents(DOCS)
        assert a.search("Curie Warsaw", k=1, fast=True)[0].external_id == "curie"  # mirror built
        a.add_documents([{"id": "tur", "text": "Alan Turing studied at Princeton."}])  # own delta
        assert a.search("Alan Turing Princeton", k=1, fast=True)[0].external_id == "tur"
        b.delete("tur")  # another connection writes: a's mirror must reload
        assert all(h.external_id != "tur" for h in a.search("Alan Turing Princeton", k=4, fast=True))
        b.add_documents([{"id": "hop", "text": "Grace Hopper built the first compiler."}])
        assert a.search("Grace Hopper compiler", k=1, fast=True)[0].external_id == "hop"


def test_reopen_keeps_embedder_and_refuses_another(tmp_path):
    path = tmp_path / "e.db"
    Store.open(path, embedder=HashedEmbedder(dim=64)).close()
    with Store.open(path) as s:
        assert s.embedder_name == "hashed-ngram-v1:64" and s.embedder.dim == 64
    with pytest.raises(StoreError, match="was built with embedder"):
        Store.open(path, embedder=HashedEmbedder(dim=32))


def test_search_mode_and_stats_and_vacuum(tmp_path):
    with Store.open(tmp_path / "v.db", embedder=HashedEmbedder(dim=64), search_mode="exact") as s:
        assert s.search_mode == "exact"
        s.add_documents([{"id": str(i), "text": f"document {i} about topic {i % 5}"} for i in range(1500)],
                        batch_size=500)
        for i in range(0, 1500, 2):
            s.delete(str(i))
        before = [h.chunk_id for h in s.search("topic 3", k=5)]
        sizes = s.vacuum()
        assert sizes["after_bytes"] < sizes["before_bytes"]
        assert [h.chunk_id for h in s.search("topic 3", k=5)] == before
        stats = s.stats()
        assert stats["documents"] == 750 and stats["vectors"] == 750 and stats["schema_version"] == schema.LATEST
    with Store.open(tmp_path / "v.db") as s:
        assert s.search_mode == "exact"


def test_read_only_open_refuses_writes(store, tmp_path):
    with Store.open(store.path, read_only=True) as ro:
        assert ro.search("Curie", k=1)[0].external_id == "curie"
        with pytest.raises(StoreError, match="read-only"):
            ro.add_documents(["new text"])
