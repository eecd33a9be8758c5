"""Assertions and a CLI runner shared by the store tests (their store fixture is in conftest.py)."""
from __future__ import annotations

DIM = 16


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``lacy-mlx ARGV`` in process: (exit status, stdout, stderr)."""
    from lacy_mlx.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_indexes_agree(store) -> None:
    """Chunks, vectors and the FTS5 keyword index hold the same chunk ids, and FTS5 checks itself against the chunks."""
    conn = store.conn
    chunk_ids = {r[0] for r in conn.execute("SELECT id FROM chunks")}
    assert {r[0] for r in conn.execute("SELECT chunk_id FROM vectors")} == chunk_ids
    # rank=1: also compare the index with the content table (an error is raised on any difference)
    conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
    docsize_ids = {r[0] for r in conn.execute("SELECT id FROM chunks_fts_docsize")}
    assert docsize_ids == chunk_ids
