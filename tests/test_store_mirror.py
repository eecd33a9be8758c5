"""The fast path's mirror: int8 rows rescored exactly, its numpy twin, loading in the background, its cost in stats."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.store import DocumentInput, Store, fastpath
from lacy_mlx.store.mirror import HEADROOM, VectorMirror, int8_dots, int8_dots_numpy, quantize
from lacy_mlx.store.rowids import RowIds

DIM = 48


def _unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fill(store, vecs, per_doc=10):
    store.add_documents([DocumentInput(chunks=[f"c{i + j}" for j in range(per_doc)], vectors=vecs[i : i + per_doc],
                                       external_id=str(i)) for i in range(0, len(vecs), per_doc)], batch_size=200)


def test_int8_dots_match_their_numpy_twin():
    rng = np.random.default_rng(0)
    mat = rng.integers(-127, 128, size=(3001, 384), dtype=np.int8)
    q8 = rng.integers(-127, 128, size=384, dtype=np.int8)
    want = mat.astype(np.int64) @ q8.astype(np.int64)  # |sum| < 2**24: exact in float32 too
    np.testing.assert_array_equal(int8_dots(mat, q8), want)
    np.testing.assert_array_equal(int8_dots_numpy(mat, q8, np.empty(len(mat), np.float32)), want)


def test_int8_rows_keep_scores_close():
    rng = np.random.default_rng(1)
    vecs, q = _unit(rng, 500), _unit(rng, 1)[0]
    mirror = VectorMirror(DIM, 0, "int8")
    mirror.add(np.arange(500), vecs)
    np.testing.assert_allclose(mirror.scores(q), vecs @ q, atol=0.01)
    scale = mirror._scale
    assert scale.shape == (DIM,) and scale.dtype == np.float32
    np.testing.assert_allclose(scale * 127, np.abs(vecs).max(axis=0) * HEADROOM, rtol=1e-6)
    rows = quantize(vecs, scale)
    assert rows.dtype == np.int8 and np.abs(rows).max() == round(127 / HEADROOM)
    assert mirror.nbytes == 1024 * DIM + DIM * 4 + 16  # capacity rows, one scale per dimension, one id run


@pytest.mark.parametrize("mirror", ["int8", "float32"])
def test_fast_path_returns_the_exact_top_k(tmp_path, mirror):
    rng = np.random.default_rng(2)
    vecs = _unit(rng, 4000)
    with Store.open(tmp_path / "m.db", embedder=HashedEmbedder(dim=DIM), mirror=mirror) as s:
        _fill(s, vecs)
        for q in _unit(rng, 20):
            fast, exact = s.search(q, k=10, fast=True), s.search(q, k=10, fast=False)
            assert [h.chunk_id for h in fast] == [h.chunk_id for h in exact]
            np.testing.assert_allclose([h.score for h in fast], [h.score for h in exact], atol=1e-5)
        filtered = s.search(vecs[5], k=3, fast=True, filters={"nothing": None})
        assert filtered[0].chunk_id == s.search(vecs[5], k=1, fast=False)[0].chunk_id
        stats = s.stats()
        assert stats["mirror"] == mirror and stats["mirror_state"] == "loaded"
        ratio = stats["mirror_bytes"] / stats["mirror_float32_bytes"]
        assert ratio < (0.35 if mirror == "int8" else 1.1)


def test_a_large_store_loads_its_mirror_in_the_background(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    vecs = _unit(rng, 2000)
    path = tmp_path / "bg.db"
    with Store.open(path, embedder=HashedEmbedder(dim=DIM)) as s:
        _fill(s, vecs)
    monkeypatch.setattr(fastpath, "BACKGROUND_ROWS", 100)
    monkeypatch.setattr(fastpath, "COMPACT_ROWS", 1000)  # "auto" picks int8 above it
    with Store.open(path) as s:
        assert s.stats()["mirror_state"] == "not loaded"
        assert s.stats()["mirror_bytes"] == 2000 * DIM + DIM * 4 + 16  # the estimate before loading
        want = s.search(vecs[7], k=5, fast=False)
        assert s.search(vecs[7], k=5, fast=True) == want  # answered at once, by the exact path if still loading
        mirror = s.load_mirror()
        assert len(mirror) == 2000 and mirror.dtype == "int8" and s.stats()["mirror_state"] == "loaded"
        assert s.stats()["mirror_bytes"] == 2000 * DIM + DIM * 4 + 16  # as estimated
        assert s.search(vecs[7], k=5, fast=True) == want
        s.add_documents([DocumentInput(chunks=["new"], vectors=vecs[:1] * -1, external_id="neg")])
        assert s.search(-vecs[0], k=1, fast=True)[0].external_id == "neg"  # own delta applied
    with Store.open(path) as s:  # closing during a load stops it
        s.search(vecs[0], k=1, fast=True)
    assert not any(t.name.startswith("lacy-mirror") and t.is_alive() for t in threading.enumerate())


def test_bad_mirror_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mirror must be one of"):
        Store.open(tmp_path / "x.db", embedder=HashedEmbedder(dim=DIM), mirror="float16")


def _as_dict(batches):
    return {int(c): v.tobytes() for ids, vecs in batches for c, v in zip(ids, vecs)}


def test_shadow_table_reader_matches_the_vec0_scan(tmp_path):
    rng = np.random.default_rng(4)
    vecs = _unit(rng, 2500)
    with Store.open(tmp_path / "sh.db", embedder=HashedEmbedder(dim=DIM)) as s:
        _fill(s, vecs)
        for i in range(0, 2500, 30):  # holes in sqlite-vec's chunks (validity bits off)
            s.delete(str(i))
        scanned = _as_dict(fastpath.scan_batches(s.conn, DIM))
        assert len(scanned) == s.count()["vectors"]
        assert _as_dict(fastpath.shadow_batches(s.conn, DIM)) == scanned
        s.vacuum()
        assert _as_dict(fastpath.shadow_batches(s.conn, DIM)) == _as_dict(fastpath.scan_batches(s.conn, DIM))
        assert len(fastpath.read_mirror(s.conn, DIM, "int8")) == len(scanned)


def test_an_unknown_shadow_layout_falls_back_to_the_scan(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    vecs = _unit(rng, 300)
    with Store.open(tmp_path / "fb.db", embedder=HashedEmbedder(dim=DIM)) as s:
        _fill(s, vecs)

        def broken(conn, dim):
            raise fastpath._LayoutMismatch("renamed")
            yield  # pragma: no cover

        monkeypatch.setattr(fastpath, "shadow_batches", broken)
        assert len(fastpath.read_mirror(s.conn, DIM, "float32")) == 300
        assert s.search(vecs[3], k=1, fast=True)[0].score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_scores_of_chosen_ids_follow_adds_and_deletes(dtype):
    rng = np.random.default_rng(6)
    vecs, q = _unit(rng, 300), _unit(rng, 1)[0]
    mirror = VectorMirror(DIM, 0, dtype)
    mirror.add(np.arange(1, 201), vecs[:200])
    mirror.remove(np.array([5, 5, 6]))
    mirror.add(np.arange(150, 250), vecs[200:])  # not above the last id: 150..200 replaced, rebuilt in id order
    got = mirror.score_ids(q, np.array([1, 5, 180, 249, 999]))
    assert set(got) == {1, 180, 249} and len(mirror) == 247
    tol = 0.01 if dtype == "int8" else 1e-6
    np.testing.assert_allclose(got[1], vecs[0] @ q, atol=tol)
    np.testing.assert_allclose(got[180], vecs[230] @ q, atol=tol)  # the replacing vector
    np.testing.assert_allclose(got[249], vecs[299] @ q, atol=tol)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_mirror_agrees_with_a_plain_dict_under_random_writes(dtype):
    rng = np.random.default_rng(7)
    mirror, want, next_id = VectorMirror(DIM, 0, dtype), {}, 1
    for step in range(60):
        if step % 3 == 2 and want:  # delete some, often the newest (SQLite then hands their ids out again)
            held = sorted(want)
            gone = held[-int(rng.integers(1, 6)):] if step % 2 else list(rng.choice(held, size=min(7, len(held))))
            mirror.remove(np.asarray(gone))
            for c in gone:
                want.pop(int(c), None)
            next_id = max(want, default=0) + 1
        else:
            n = int(rng.integers(1, 40))
            vecs = _unit(rng, n) * (1 + step / 10)  # growing ranges: int8 scales must widen
            ids = np.arange(next_id, next_id + n)
            mirror.add(ids, vecs)
            want.update(zip(ids.tolist(), vecs))
            next_id += n
        assert len(mirror) == len(want)
        q = _unit(rng, 1)[0]
        ids, scores = mirror.search(q, k=len(want) + 3)
        assert sorted(ids.tolist()) == sorted(want)
        exact = np.array([want[c] @ q for c in ids.tolist()])
        tol = 0.02 * (1 + step / 10) if dtype == "int8" else 1e-5
        np.testing.assert_allclose(scores, exact, atol=tol)
        allowed = np.asarray(sorted(want)[::2] + [10_000])
        ids, _ = mirror.search(q, k=5, allowed=allowed)
        assert set(ids.tolist()) <= set(allowed.tolist()) and len(ids) == min(5, len(allowed) - 1)
    assert mirror._ids.runs < 25  # ids held as runs, not one per row


def test_row_ids_are_runs():
    ids = RowIds.from_ids(np.array([3, 4, 5, 9, 10, 20]))
    assert ids.runs == 3 and ids.last == 20 and ids.nbytes == 3 * 16
    np.testing.assert_array_equal(ids.ids_of(np.arange(6)), [3, 4, 5, 9, 10, 20])
    np.testing.assert_array_equal(ids.rows_of(np.array([2, 3, 5, 6, 9, 10, 11, 20, 21])), [-1, 0, 2, -1, 3, 4, -1, 5, -1])
    ids.append(np.array([21, 22]))  # extends the last run
    assert ids.runs == 3 and len(ids) == 8
    ids.truncate(4)
    assert ids.last == 9 and ids.runs == 2
    with pytest.raises(ValueError, match="ascending"):
        ids.append(np.array([9]))
    assert RowIds.from_ids(np.arange(1, 1_000_001)).nbytes == 16
