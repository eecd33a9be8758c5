"""Assertions, a fixture and a CLI runner shared by the store tests."""
from __future__ import annotations

from pathlib import Path

import pytest

DIM = 16


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``lacy-mlx ARGV`` in process: (exit status, stdout, stderr)."""
    from lacy_mlx.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def store_path(tmp_path) -> Path:
    """A store holding one document that every bad call must leave intact."""
    from lacy_mlx.embed import HashedEmbedder
    from lacy_mlx.store import Store

    path = tmp_path / "kb.db"
    with Store.open(path, embedder=HashedEmbedder(dim=DIM)) as s:
        s.add_documents([{"id": "keep", "text": "This document must survive every bad call."}])
    return path


def assert_indexes_agree(store) -> None:
    """Chunks, vectors and the FTS5 keyword index hold the same chunk ids, and FTS5 checks itself against the chunks."""
    conn = store.conn
    chunk_ids = {r[0] for r in conn.execute("SELECT id FROM chunks")}
    assert {r[0] for r in conn.execute("SELECT chunk_id FROM vectors")} == chunk_ids
    # rank=1: also compare the index with the content table (an error is raised on any difference)
    conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
    docsize_ids = {r[0] for r in conn.execute("SELECT id FROM chunks_fts_docsize")}
    assert docsize_ids == chunk_ids
