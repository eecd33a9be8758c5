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


def _m1_base(conn: apsw.Connection, dim: int) -> None:
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


# Index i holds migration i + 1.
MIGRATIONS: list[Callable[[apsw.Connection, int], None]] = [_m1_base]
LATEST = len(MIGRATIONS)


def schema_version(conn: apsw.Connection) -> int:
    """The migration number the store is at (0 for an empty database)."""
    return int(conn.execute("PRAGMA user_version").fetchall()[0][0])


def migrate(conn: apsw.Connection, dim: int) -> int:
    """Apply every pending migration, each in a transaction; return the new version."""
    version = schema_version(conn)
    if version > LATEST:
        raise newer_schema_error(version)
    for number in range(version + 1, LATEST + 1):
        with write_transaction(conn):  # one transaction: the migration and its version bump land together
            if schema_version(conn) >= number:  # another process applied it while we waited for the lock
                continue
            MIGRATIONS[number - 1](conn, dim)
            conn.execute(f"PRAGMA user_version = {int(number)}")
    return LATEST


def newer_schema_error(version: int) -> StoreError:
    """The error for a store written by a newer lacy-mlx."""
    return StoreError(
        f"this store has schema version {version}, newer than this lacy-mlx understands ({LATEST}): "
        f"upgrade lacy-mlx (`pip install -U lacy-mlx`) to open it"
    )
