"""Opening SQLite files through apsw with sqlite-vec loaded, and turning failures into clear errors.

apsw, not the stdlib ``sqlite3``: many Python builds (macOS system Python, pyenv) cannot load
extensions through ``sqlite3``.
"""
from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
        # A URI needs an absolute path: relative --db paths are resolved against the working folder.
        conn = apsw.Connection(path.absolute().as_uri() if read_only else str(path), flags=flags)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        conn.execute("PRAGMA foreign_keys = ON")
        if read_only:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # WAL needs its -shm file here
    except apsw.NotADBError as exc:
        raise StoreError(f"{path} is not a lacy store (not an SQLite database)") from exc
    except apsw.CorruptError as exc:
        raise damaged(path, exc) from exc
    except (apsw.CantOpenError, apsw.ReadOnlyError) as exc:
        if not read_only:
            raise not_writable(path, exc) from exc
        # A store on read-only media has no room for the WAL index: read it as an immutable file.
        conn = apsw.Connection(path.absolute().as_uri() + "?immutable=1", flags=flags)
    load_vec(conn)
    return conn


def not_writable(path: Path, exc: BaseException) -> StoreError:
    """The error for a store location that cannot be written."""
    return StoreError(
        f"cannot write the store at {path}: the location is read-only or missing ({exc}). "
        f"Write to a store in a writable folder; an existing store there can still be searched "
        f"(opened read-only)"
    )


def damaged(path: Path, exc: BaseException) -> StoreError:
    """The error for a store file SQLite reads as corrupt or truncated."""
    return StoreError(
        f"the store {path} is damaged ({type(exc).__name__}: {str(exc)[:200]}): rebuild it by ingesting "
        f"the documents again into a new file, or try to salvage it with "
        f"`sqlite3 {path} .recover | sqlite3 recovered.db`"
    )


@contextmanager
def write_transaction(conn: apsw.Connection) -> Iterator[None]:
    """One write transaction that takes the write lock first (``BEGIN IMMEDIATE``).

    A deferred transaction that reads before it writes cannot wait for another writer (SQLite
    returns SQLITE_BUSY at once to avoid a deadlock); taking the lock up front makes concurrent
    writers queue on the busy timeout instead. Inside an open transaction it nests as a savepoint.
    """
    if conn.in_transaction:
        with conn:
            yield
        return
    path = Path(conn.filename)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except (apsw.ReadOnlyError, apsw.CantOpenError) as exc:
        raise not_writable(path, exc) from exc
    except apsw.BusyError as exc:
        raise StoreError(f"the store {path} stayed locked by another writer for {BUSY_TIMEOUT_MS // 1000} s: "
                         f"try again when it has finished") from exc
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, (apsw.ReadOnlyError, apsw.CantOpenError)):
            raise not_writable(path, exc) from exc
        raise


F = TypeVar("F", bound=Callable[..., Any])


def translate_errors(fn: F) -> F:
    """Wrap a store method so SQLite failures reach the caller as StoreErrors that say what to do."""

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            with _translated(self.path):
                yield from fn(self, *args, **kwargs)

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _translated(self.path):
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


# What reading a damaged file raises: SQLite's corruption codes, but also errors from bytes that
# SQLite does not check (text that is not UTF-8, a vec0 table whose blobs or options are garbled).
# The store's own SQL is fixed, so an SQLError at run time means the file is not what it wrote.
DAMAGE = (apsw.CorruptError, apsw.NotADBError, apsw.SQLError, UnicodeDecodeError)


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    try:
        yield
    except StoreError:
        raise
    except DAMAGE as exc:
        raise damaged(path, exc) from exc
    except (apsw.ReadOnlyError, apsw.CantOpenError) as exc:
        raise not_writable(path, exc) from exc
    except apsw.FullError as exc:
        raise StoreError(f"the disk holding {path} is full ({exc}): free some space; nothing was written") from exc


def guard_public_methods(cls: type) -> type:
    """Apply :func:`translate_errors` to every public method of ``cls`` (its bases' included)."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if inspect.isfunction(attr):
            setattr(cls, name, translate_errors(attr))
    return cls
