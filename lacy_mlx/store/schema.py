"""The store's schema as numbered migrations; ``PRAGMA user_version`` records the last one applied.

Each migration runs in its own transaction with the version bump, so a store is always at a
whole version. Migrations never change: a later schema is a new migration appended here.
"""
from __future__ import annotations

from collections.abc import Callable

import apsw

from lacy_mlx.errors import StoreError
from lacy_mlx.store.connection import write_transaction

STORE_FORMAT = "lacy-store"
Progress = Callable[[str, int, int], None]  # (what, done, total)


def _m1_base(conn: apsw.Connection, dim: int, progress: Progress | None = None) -> None:
    conn.execute(
        """
        CREATE TABLE lacy_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE documents(
            id INTEGER PRIMARY KEY,
            external_id TEXT UNIQUE,
            title TEXT,
            metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
            content_hash TEXT NOT NULL,
            created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        );
        CREATE INDEX documents_content_hash ON documents(content_hash);
        CREATE TABLE chunks(
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            text TEXT NOT NULL,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            UNIQUE(document_id, ordinal)
        );
        """
    )
    create_vector_table(conn, "vectors", dim)


def create_vector_table(conn: apsw.Connection, name: str, dim: int) -> None:
    """Create a vec0 table of ``dim``-d float vectors keyed by chunk id (DDL cannot bind parameters)."""
    if not isinstance(dim, int) or dim <= 0 or name != "vectors":
        raise ValueError(f"bad vector table spec {name!r}/{dim!r}")
    conn.execute(
        f"CREATE VIRTUAL TABLE {name} USING vec0("
        f"chunk_id INTEGER PRIMARY KEY, embedding float[{dim}] distance_metric=cosine)"
    )


# unicode61 folds case and diacritics ("Köln" finds "koln"); splitting at punctuation makes a code
# such as "KQ-7731" the phrase "kq 7731", which quoted queries match exactly.
FTS_TOKENIZER = "unicode61 remove_diacritics 2"
FTS_BATCH = 20_000  # chunks indexed per step of the migration (one progress report each)


def _m2_keyword_index(conn: apsw.Connection, dim: int, progress: Progress | None = None) -> None:
    """Full-text (FTS5, BM25) index over chunk texts, kept in step with ``chunks`` by triggers.

    Triggers, not code in the write path, so every way a chunk row goes (upsert, delete, the
    documents' ON DELETE CASCADE) updates the index in the same transaction.
    """
    conn.execute(
        f"""
        CREATE VIRTUAL TABLE chunks_fts USING fts5(
            text, content='chunks', content_rowid='id', tokenize='{FTS_TOKENIZER}');
        CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
        END;
        CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END;
        CREATE TRIGGER chunks_fts_update AFTER UPDATE OF text ON chunks BEGIN
            INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
        END;
        """
    )
    total = int(conn.execute("SELECT count(*) FROM chunks").fetchall()[0][0])
    done, last = 0, -1
    while done < total:  # in id order, a batch at a time, so a large store shows progress
        rows = conn.execute("SELECT id FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, FTS_BATCH)).fetchall()
        if not rows:
            break
        conn.execute("INSERT INTO chunks_fts(rowid, text) SELECT id, text FROM chunks WHERE id > ? AND id <= ?",
                     (last, rows[-1][0]))
        done, last = done + len(rows), rows[-1][0]
        if progress:
            progress("keyword index", done, total)


# Index i holds migration i + 1.
MIGRATIONS: list[Callable[[apsw.Connection, int, Progress | None], None]] = [_m1_base, _m2_keyword_index]
LATEST = len(MIGRATIONS)


def schema_version(conn: apsw.Connection) -> int:
    """The migration number the store is at (0 for an empty database)."""
    return int(conn.execute("PRAGMA user_version").fetchall()[0][0])


def migrate(conn: apsw.Connection, dim: int, progress: Progress | None = None) -> int:
    """Apply every pending migration, each in a transaction; return the new version.

    ``progress(what, done, total)`` is called by migrations that rebuild something large.
    """
    version = schema_version(conn)
    if version > LATEST:
        raise newer_schema_error(version)
    for number in range(version + 1, LATEST + 1):
        with write_transaction(conn):  # one transaction: the migration and its version bump land together
            if schema_version(conn) >= number:  # another process applied it while we waited for the lock
                continue
            MIGRATIONS[number - 1](conn, dim, progress)
            conn.execute(f"PRAGMA user_version = {int(number)}")
    return LATEST


def newer_schema_error(version: int) -> StoreError:
    """The error for a store written by a newer lacy-mlx."""
    return StoreError(
        f"this store has schema version {version}, newer than this lacy-mlx understands ({LATEST}): "
        f"upgrade lacy-mlx (`pip install -U lacy-mlx`) to open it"
    )
