"""Bad input gets a clear error and loses nothing already stored."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import apsw
import numpy as np
import pytest

from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import InputError, StoreError
from lacy_mlx.ingest import iter_documents
from lacy_mlx.store import DocumentInput, Store
from lacy_mlx.store.connection import VEC_PATH_ENV
from lacy_mlx.store.schema import LATEST

DIM = 16


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "kb.db", embedder=HashedEmbedder(dim=DIM)) as s:
        s.add_documents([{"id": "keep", "text": "This document must survive every bad call."}])
        yield s


def _intact(s: Store) -> None:
    assert s.count() == {"documents": 1, "chunks": 1, "vectors": 1}
    assert s.get("keep") is not None


@pytest.mark.parametrize("vec", [np.ones(DIM + 1), np.ones((2, DIM - 1)), np.full(DIM, np.nan),
                                 np.r_[np.ones(DIM - 1), np.inf], np.zeros(DIM)])
def test_bad_vectors_rejected(store, vec):
    with pytest.raises(InputError, match="dimension|NaN or inf|zeros|shape"):
        store.search(vec, k=1)
    rows = np.atleast_2d(vec)
    with pytest.raises(InputError):
        store.add_documents([DocumentInput(chunks=["x"] * len(rows), vectors=rows, external_id="bad")])
    _intact(store)


def test_wrong_dimension_message_says_what_to_do(store):
    with pytest.raises(InputError, match=rf"holds {DIM}-dimensional vectors: embed with the store's embedder"):
        store.search(np.ones(DIM * 2), k=1)


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_empty_text_rejected_then_skipped(store, text):
    with pytest.raises(InputError, match="empty or whitespace-only"):
        store.add_documents([{"id": "empty", "text": text}])
    with pytest.warns(UserWarning, match="empty"):
        result = store.add_documents([{"id": "empty", "text": text}, {"id": "ok", "text": "fine"}], on_error="skip")
    assert result.added == 1 and result.skipped[0][0] == "'empty'"
    with pytest.raises(InputError, match="search text is empty"):
        store.search(text, k=1)


def test_batch_with_a_bad_document_writes_nothing_of_that_batch(store):
    with pytest.raises(InputError):
        store.add_documents([{"id": "good", "text": "good text"}, {"id": "bad", "text": " "}])
    assert store.get("good") is None
    _intact(store)


def test_non_utf8_file_skipped_rest_ingested(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "good.txt").write_text("Readable text.", encoding="utf-8")
    (tmp_path / "docs" / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.warns(UserWarning, match="latin1.txt: not UTF-8"):
        docs = list(iter_documents([tmp_path / "docs"]))
    assert [d.title for d in docs] == ["good"]


def test_not_a_store(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="not a lacy store"):
        Store.open(junk)
    other = tmp_path / "other.db"
    conn = apsw.Connection(str(other))
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    with pytest.raises(StoreError, match="SQLite database but not a lacy store"):
        Store.open(other)
    assert junk.stat().st_size == 4096  # untouched
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(tmp_path)


def test_newer_schema_refused(store):
    store.conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    path = store.path
    store.close()
    with pytest.raises(StoreError, match="newer than this lacy-mlx understands"):
        Store.open(path)


def test_missing_store_for_reading(tmp_path):
    with pytest.raises(StoreError, match="there is no store"):
        Store.open(tmp_path / "absent.db", create=False)
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "no" / "such" / "dir.db")


def test_read_only_location_as_root_proc():
    with pytest.raises(StoreError, match="read-only or missing"):
        Store.open("/proc/lacy-store.db", embedder=HashedEmbedder(dim=DIM))


def test_read_only_directory_unprivileged(tmp_path):
    """A real read-only folder: root ignores permission bits, so the check runs as 'nobody'."""
    base = Path(tempfile.mkdtemp(prefix="lacy-ro-"))
    try:
        with Store.open(base / "kb.db", embedder=HashedEmbedder(dim=DIM)) as s:
            s.add_documents([{"id": "a", "text": "kept text"}])
        base.chmod(0o555)
        os.chmod(base / "kb.db", 0o444)
        script = textwrap.dedent(f"""
            import os, sys
            from lacy_mlx.store import Store  # import first: root's Python install is unreadable to nobody
            from lacy_mlx.errors import StoreError
            from lacy_mlx.embed import HashedEmbedder
            import lacy_mlx.encoder, lacy_mlx.store.writes, encodings.idna, json, sqlite_vec
            if os.getuid() == 0:
                os.setgid(65534); os.setuid(65534)
            try:
                Store.open({str(base / 'new.db')!r}, embedder=HashedEmbedder(dim={DIM}))
            except StoreError as e:
                print("create-error:", e)
            with Store.open({str(base / 'kb.db')!r}, read_only=True) as s:
                print("read:", s.search("kept", k=1)[0].external_id)
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert "create-error:" in out.stdout and "read-only or missing" in out.stdout, out.stdout + out.stderr
        assert "read: a" in out.stdout, out.stdout + out.stderr
    finally:
        base.chmod(0o755)
        for p in base.iterdir():
            p.unlink()
        base.rmdir()


def test_missing_or_unloadable_vec_extension(tmp_path, monkeypatch):
    path = tmp_path / "kb.db"
    Store.open(path, embedder=HashedEmbedder(dim=DIM)).close()
    monkeypatch.setenv(VEC_PATH_ENV, str(tmp_path / "nowhere" / "vec0"))
    with pytest.raises(StoreError, match="could not load the sqlite-vec extension.*pip install --force-reinstall"):
        Store.open(path)
    fake = tmp_path / "vec0.so"
    fake.write_bytes(b"not a shared library")
    monkeypatch.setenv(VEC_PATH_ENV, str(fake))
    with pytest.raises(StoreError, match="could not load the sqlite-vec extension"):
        Store.open(path)
    monkeypatch.delenv(VEC_PATH_ENV)
    with Store.open(path) as s:  # nothing was harmed
        assert s.count()["documents"] == 0


def test_bad_arguments(store):
    with pytest.raises(InputError, match="k must be"):
        store.search("x", k=0)
    with pytest.raises(InputError, match="filter"):
        store.search("x", k=1, filters={"lang": {"nested": 1}})
    with pytest.raises(InputError, match="one vector per chunk"):
        store.add_documents([DocumentInput(chunks=["a", "b"], vectors=np.ones((1, DIM)))])
    with pytest.raises(InputError, match="search_mode"):
        Store.open(store.path, search_mode="quick")
    _intact(store)
