"""The knowledge store: documents, chunks and their vectors in one SQLite file with sqlite-vec.

Every write is a transaction: a batch of documents lands whole or not at all, even if the process
is killed mid-ingest. WAL mode lets readers in other processes go on while one process writes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import apsw

from lacy_mlx.embed.base import Embedder
from lacy_mlx.embed.registry import default_embedder, resolve_embedder
from lacy_mlx.errors import InputError, LacyError, StoreError, StoreUpgradeNeeded
from lacy_mlx.store import schema
from lacy_mlx.store.connection import (
    check_is_sqlite,
    connect,
    DAMAGE,
    damaged,
    guard_public_methods,
    not_writable,
    write_transaction,
)
from lacy_mlx.store.fastpath import MirrorCache
from lacy_mlx.store.records import Document, StoredChunk, check_unicode
from lacy_mlx.store.search import DEFAULT_TEXT_MODE, RETRIEVAL_MODES, SEARCH_MODES, SearchMixin
from lacy_mlx.store.writes import WriteMixin

__all__ = ["DEFAULT_TEXT_MODE", "RETRIEVAL_MODES", "SEARCH_MODES", "Store"]


@guard_public_methods  # SQLite failures (damaged file, read-only location) become StoreErrors
class Store(SearchMixin, WriteMixin):
    """One lacy store file. Open with :meth:`open`; use as a context manager or call :meth:`close`."""

    def __init__(self, conn: apsw.Connection, path: Path, meta: dict[str, str], embedder: Embedder | None,
                 read_only: bool, mirror: str = "auto") -> None:
        self._conn = conn
        self.path = path
        self.dim = int(meta["dim"])
        self.embedder_name = meta["embedder"]
        self.search_mode = meta.get("search_mode", "fast")
        self.read_only = read_only
        self._embedder = embedder
        self._fast = MirrorCache(path, self.dim, mirror)

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, embedder: Embedder | None = None, create: bool = True,
             read_only: bool = False, search_mode: str | None = None,
             progress: schema.Progress | None = None, mirror: str = "auto") -> "Store":
        """Open the store at ``path``, creating it (with ``embedder`` or the default one) if missing.

        An existing store keeps its embedder: passing a different one raises StoreError, passing
        None rebuilds the recorded one on first use. ``search_mode`` ("fast" or "exact") sets the
        store's default search path when given. A store written by an older lacy-mlx is migrated
        on open; ``progress(what, done, total)`` reports the steps of a long migration. ``mirror``
        is the fast path's in-memory copy of the vectors: ``"int8"`` (a quarter of the memory,
        candidates rescored exactly), ``"float32"`` (exact scores) or ``"auto"`` (float32 up to
        ``fastpath.COMPACT_ROWS`` vectors, int8 above); see ``store.fastpath``.
        """
        path = Path(path)
        if search_mode is not None and search_mode not in SEARCH_MODES:
            raise InputError(f"search_mode must be one of {SEARCH_MODES}, got {search_mode!r}")
        if path.is_dir():
            raise StoreError(f"{path} is a directory: give the path of a store file, e.g. {path / 'kb.db'}")
        exists = path.exists() and path.stat().st_size > 0
        if not exists and (read_only or not create):
            raise StoreError(f"there is no store at {path}: create one with `lacy-mlx ingest FILES --db {path}`")
        if exists:
            check_is_sqlite(path)
        elif not path.parent.is_dir():
            raise StoreError(f"cannot create the store at {path}: the folder {path.parent} does not exist")
        conn = connect(path, read_only=read_only, create=not exists)
        try:
            meta = cls._check_schema(conn, path, embedder, fresh=not exists, read_only=read_only, progress=progress)
            store = cls(conn, path, meta, embedder, read_only, mirror)
            if search_mode is not None and search_mode != store.search_mode:
                store.set_search_mode(search_mode)
            return store
        except LacyError:
            conn.close()
            raise
        except DAMAGE as exc:
            conn.close()
            raise damaged(path, exc) from exc
        except (apsw.ReadOnlyError, apsw.CantOpenError) as exc:  # a WAL store in a folder we cannot write
            conn.close()
            raise not_writable(path, exc) from exc
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _check_schema(conn: apsw.Connection, path: Path, embedder: Embedder | None, *, fresh: bool,
                      read_only: bool, progress: schema.Progress | None = None) -> dict[str, str]:
        """Check (or create) the schema and return the meta table; refuse foreign or newer files."""
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except apsw.NotADBError as exc:
            raise StoreError(f"{path} is not a lacy store (not an SQLite database)") from exc
        if "lacy_meta" not in tables or _unfinished(conn):
            if tables and "lacy_meta" not in tables:
                raise StoreError(f"{path} is an SQLite database but not a lacy store: pick another path")
            if read_only:
                if tables:
                    raise StoreError(f"the store {path} was never fully created (its creation was interrupted): "
                                     f"open it once for writing, e.g. `lacy-mlx ingest FILES --db {path}`")
                raise StoreError(f"there is no store at {path}")
            _create(conn, path, embedder or default_embedder())
        version = schema.schema_version(conn)
        if version > schema.LATEST:
            raise schema.newer_schema_error(version)
        meta = dict(conn.execute("SELECT key, value FROM lacy_meta").fetchall())
        if meta.get("format") != schema.STORE_FORMAT or "dim" not in meta:
            raise StoreError(f"{path} is an SQLite database but not a lacy store: pick another path")
        if not str(meta["dim"]).isdigit() or int(meta["dim"]) <= 0 or "embedder" not in meta:
            raise damaged(path, ValueError(f"its metadata is garbled (dim {meta['dim']!r})"))
        if version < schema.LATEST:
            if read_only:
                raise StoreUpgradeNeeded(f"{path} needs a schema upgrade: open it once for writing "
                                 f"(e.g. `lacy-mlx ingest FILES --db {path}`), then read it")
            schema.migrate(conn, 0, progress)
        if embedder is not None and (embedder.name != meta["embedder"] or embedder.dim != int(meta["dim"])):
            raise StoreError(
                f"{path} was built with embedder {meta['embedder']!r} ({meta['dim']}-d), not "
                f"{embedder.name!r} ({embedder.dim}-d): open it without an embedder, or use a new store"
            )
        return meta

    def close(self) -> None:
        """Close the connection (idempotent); a background mirror load stops."""
        self._fast.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> apsw.Connection:
        """The open apsw connection."""
        if self._conn is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._conn

    @property
    def embedder(self) -> Embedder:
        """The store's embedder, built from its recorded name on first use."""
        if self._embedder is None:
            self._embedder = resolve_embedder(self.embedder_name)
        return self._embedder

    # ---- reads ----------------------------------------------------------------------------

    def _vectors_version(self) -> int:
        rows = self.conn.execute("SELECT value FROM lacy_meta WHERE key = 'vectors_version'").fetchall()
        if not rows or not str(rows[0][0]).isdigit():
            raise damaged(self.path, ValueError(f"vectors_version is {rows[0][0] if rows else 'missing'!r}"))
        return int(rows[0][0])

    def _doc_row(self, ref: int | str) -> tuple | None:
        if isinstance(ref, bool) or not isinstance(ref, (int, str)):
            raise InputError(f"a document reference is an external id (str) or a row id (int), got {type(ref).__name__}")
        if isinstance(ref, str):
            check_unicode(ref, "the external id")
        col = "id" if isinstance(ref, int) else "external_id"
        rows = self.conn.execute(
            f"SELECT id, external_id, title, metadata, content_hash, created FROM documents WHERE {col} = ?", (ref,)
        ).fetchall()
        return rows[0] if rows else None

    def get(self, ref: int | str) -> Document | None:
        """The document with this external id (str) or internal row id (int), with its chunks; None if absent."""
        row = self._doc_row(ref)
        if row is None:
            return None
        chunks = [StoredChunk(*r) for r in self.conn.execute(
            "SELECT id, ordinal, text, char_start, char_end FROM chunks WHERE document_id = ? ORDER BY ordinal",
            (row[0],))]
        return Document(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], chunks)

    def documents(self) -> Iterable[tuple[int, str | None, str | None]]:
        """``(id, external_id, title)`` of every document, by id."""
        yield from self.conn.execute("SELECT id, external_id, title FROM documents ORDER BY id")

    def count(self) -> dict[str, int]:
        """Numbers of documents, chunks and vectors."""
        one: Callable[[str], int] = lambda sql: int(self.conn.execute(sql).fetchall()[0][0])
        return {
            "documents": one("SELECT count(*) FROM documents"),
            "chunks": one("SELECT count(*) FROM chunks"),
            "vectors": one("SELECT count(*) FROM vectors"),
        }

    def stats(self) -> dict[str, Any]:
        """Counts, configuration and file sizes (``free_bytes`` is reclaimable by :meth:`vacuum`)."""
        pragma = lambda name: int(self.conn.execute(f"PRAGMA {name}").fetchall()[0][0])  # noqa: E731
        page = pragma("page_size")
        wal = Path(str(self.path) + "-wal")
        counts = self.count()
        return {
            **counts,
            "path": str(self.path),
            "dim": self.dim,
            "embedder": self.embedder_name,
            "search_mode": self.search_mode,
            "schema_version": schema.schema_version(self.conn),
            "sqlite_vec": self.conn.execute("SELECT vec_version()").fetchall()[0][0],
            "file_bytes": self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
            "free_bytes": pragma("freelist_count") * page,
        } | self._fast.stats(counts["vectors"])


def _unfinished(conn: apsw.Connection) -> bool:
    """Whether the file holds a lacy schema whose creation never committed its metadata (and no documents)."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "lacy_meta" not in names or conn.execute("SELECT 1 FROM lacy_meta WHERE key = 'format'").fetchall():
        return False
    return "documents" not in names or not conn.execute("SELECT 1 FROM documents LIMIT 1").fetchall()


def _create(conn: apsw.Connection, path: Path, emb: Embedder) -> None:
    """Create the schema and the metadata in one transaction (an interrupted creation leaves no store).

    A file left half-created by an older lacy-mlx (schema, no metadata, no documents) is rebuilt.
    """
    try:
        conn.execute("PRAGMA journal_mode = WAL")  # cannot change inside a transaction
        with write_transaction(conn):
            if _unfinished(conn):
                _drop_all(conn)
            elif conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'lacy_meta'").fetchall():
                return  # another process created it while we waited for the lock
            schema.migrate(conn, emb.dim)
            conn.executemany(
                "INSERT INTO lacy_meta(key, value) VALUES (?, ?)",
                [("format", schema.STORE_FORMAT), ("dim", str(emb.dim)), ("embedder", emb.name),
                 ("search_mode", "fast"), ("vectors_version", "0")],
            )
    except (apsw.ReadOnlyError, apsw.CantOpenError, apsw.IOError) as exc:
        raise not_writable(path, exc) from exc


def _drop_all(conn: apsw.Connection) -> None:
    """Drop every table of an empty, unfinished store: triggers first (they name other tables), then
    virtual tables (they own shadow tables), then the rest."""
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        conn.execute(f'DROP TRIGGER "{name.replace(chr(34), chr(34) * 2)}"')
    for kind in ("virtual", "plain"):
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'").fetchall()
        for name, sql in rows:
            is_virtual = (sql or "").upper().startswith("CREATE VIRTUAL")
            if (kind == "virtual") == is_virtual:
                exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchall()
                if exists:
                    conn.execute(f'DROP TABLE "{name.replace(chr(34), chr(34) * 2)}"')
    conn.execute("PRAGMA user_version = 0")
