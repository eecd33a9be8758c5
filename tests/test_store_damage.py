"""A damaged store file (truncated, garbage pages, a zeroed schema, undecodable text) gives one
clear error saying how to recover, on every command and in Python, never a raw apsw traceback."""
from __future__ import annotations

from pathlib import Path

import apsw
import numpy as np
import pytest

from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import StoreError
from lacy_mlx.store import Store

from store_checks import DIM, cli


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated-half":
        data = data[: len(data) // 2]
    elif how == "truncated-header":
        data = data[:100]
    elif how == "garbage-pages":
        rng = np.random.default_rng(0)
        for page in range(1, len(data) // 4096):
            data[page * 4096 : page * 4096 + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    elif how == "zeroed-schema":
        data[100:4096] = b"\x00" * (4096 - 100)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated-half", "truncated-header", "garbage-pages", "zeroed-schema"])
def test_damaged_store_gives_one_clear_error(tmp_path, capsys, how):
    path = tmp_path / "kb.db"
    with Store.open(path, embedder=HashedEmbedder(dim=DIM)) as s:
        s.add_documents([{"id": f"d{i}", "text": f"Paragraph {i}. " * 200} for i in range(40)])
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage(path, how)
    for argv in (["search", "paragraph", "--db", str(path)], ["store", "stats", "--db", str(path)],
                 ["store", "list", "--db", str(path)], ["ingest", str(tmp_path / "x.txt"), "--db", str(path)]):
        (tmp_path / "x.txt").write_text("more text", encoding="utf-8")
        try:
            code, _, err = cli(capsys, *argv)
        except apsw.Error as exc:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"{argv[0]}: raw {type(exc).__name__}: {exc}")
        if code:
            assert err.startswith("lacy-mlx: error:") and err.count("\n") == 1, err
            assert "damaged" in err or "not a lacy store" in err or "not an SQLite" in err, err


def test_damaged_store_message_says_how_to_recover(tmp_path):
    path = tmp_path / "kb.db"
    with Store.open(path, embedder=HashedEmbedder(dim=DIM)) as s:
        s.add_documents([{"id": f"d{i}", "text": f"Paragraph {i}. " * 200} for i in range(40)])
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage(path, "garbage-pages")
    with pytest.raises(StoreError, match=r"damaged.*ingesting the documents again.*\.recover"):
        with Store.open(path, read_only=True) as s:
            s.search("paragraph", k=3, fast=False)
            list(s.documents())


def test_text_that_is_not_utf8_in_the_file_reads_as_damage(store_path):
    conn = apsw.Connection(str(store_path))
    conn.execute("UPDATE chunks SET text = CAST(x'ff41' AS TEXT)")
    conn.close()
    with Store.open(store_path, read_only=True) as s:
        with pytest.raises(StoreError, match="damaged"):
            s.search("survive", k=1)
