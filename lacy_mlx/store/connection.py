"""Opening SQLite files through apsw with sqlite-vec loaded, and turning failures into clear errors.

apsw, not the stdlib ``sqlite3``: many Python builds (macOS system Python, pyenv) cannot load
extensions through ``sqlite3``.
"""
from __future__ import annotations

import os
from pathlib import Path

import apsw

from lacy_mlx.errors import StoreError

SQLITE_MAGIC = b"SQLite format 3\x00"
# Point at another build of the extension (or test a broken one) without touching the package.
VEC_PATH_ENV = "LACY_SQLITE_VEC_PATH"
BUSY_TIMEOUT_MS = 10_000


def vec_extension_path() -> str:
    """Path of the sqlite-vec loadable extension: ``$LACY_SQLITE_VEC_PATH`` or the sqlite-vec package's."""
    override = os.environ.get(VEC_PATH_ENV)
    if override:
        return override
    try:
        import sqlite_vec
    except ImportError as exc:
        raise StoreError("sqlite-vec is not installed: run `pip install sqlite-vec`") from exc
    return sqlite_vec.loadable_path()


def load_vec(conn: apsw.Connection) -> None:
    """Load sqlite-vec into ``conn``, or raise a StoreError that says how to fix it."""
    path = vec_extension_path()
    try:
        conn.enable_load_extension(True)
        conn.load_extension(path)
    except apsw.Error as exc:
        raise StoreError(
            f"could not load the sqlite-vec extension from {path}: {exc}. Reinstall it with "
            f"`pip install --force-reinstall sqlite-vec`"
            + (f" or unset {VEC_PATH_ENV}" if os.environ.get(VEC_PATH_ENV) else "")
        ) from exc
    finally:
        conn.enable_load_extension(False)


def check_is_sqlite(path: Path) -> None:
    """Refuse a file that is not an SQLite database before SQLite touches it."""
    with path.open("rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head and head != SQLITE_MAGIC:
        raise StoreError(f"{path} is not a lacy store (not an SQLite database); pass a store file or a new path")


def connect(path: Path, *, read_only: bool = False, create: bool = False) -> apsw.Connection:
    """Open ``path`` with sqlite-vec loaded, a busy timeout and foreign keys on."""
    if read_only:
        flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    else:
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_URI | (apsw.SQLITE_OPEN_CREATE if create else 0)
    try:
        conn = apsw.Connection(path.as_uri() if read_only else str(path), flags=flags)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        conn.execute("PRAGMA foreign_keys = ON")
        if read_only:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # WAL needs its -shm file here
    except apsw.NotADBError as exc:
        raise StoreError(f"{path} is not a lacy store (not an SQLite database)") from exc
    except (apsw.CantOpenError, apsw.ReadOnlyError) as exc:
        if not read_only:
            raise not_writable(path, exc) from exc
        # A store on read-only media has no room for the WAL index: read it as an immutable file.
        conn = apsw.Connection(path.as_uri() + "?immutable=1", flags=flags)
    load_vec(conn)
    return conn


def not_writable(path: Path, exc: BaseException) -> StoreError:
    """The error for a store location that cannot be written."""
    return StoreError(
        f"cannot write the store at {path}: the location is read-only or missing ({exc}). "
        f"Choose a writable path, or open an existing store with read_only=True"
    )
