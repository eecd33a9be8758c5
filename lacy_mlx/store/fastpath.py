"""When and how a store (re)builds its vector mirror: inline for small stores, in a thread for large ones.

Opening a store never reads its vectors. The first fast search builds the mirror: inline when the
store holds at most ``BACKGROUND_ROWS`` vectors (well under a second), otherwise on a thread with
its own read-only connection, while searches take sqlite-vec's exact path until it is ready, so
no call waits for a million-row load. A mirror is only ever swapped in whole.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import numpy as np

from lacy_mlx.store.connection import connect
from lacy_mlx.store.mirror import LOAD_BATCH, MIRROR_DTYPES, VectorMirror, load_mirror

BACKGROUND_ROWS = 200_000
# "auto" mirrors: float32 up to this many vectors (exact, and BLAS beats int8 plus rescoring there:
# each rescored candidate is a sqlite-vec rowid lookup of ~0.2-0.8 ms), int8 above.
COMPACT_ROWS = 200_000
MIRROR_KINDS = ("auto", *MIRROR_DTYPES)


def vectors_version(conn: Any) -> int:
    """The store's ``vectors_version`` counter (bumped by every write to the vectors)."""
    rows = conn.execute("SELECT value FROM lacy_meta WHERE key = 'vectors_version'").fetchall()
    if not rows or not str(rows[0][0]).isdigit():  # a damaged file (the store's guard reports it)
        raise apsw.CorruptError(f"vectors_version is {rows[0][0] if rows else 'missing'!r}")
    return int(rows[0][0])


def read_mirror(conn: Any, dim: int, dtype: str, *, stop=None, progress=None) -> VectorMirror | None:
    """Build a mirror from ``conn`` in one read transaction, so its version and rows agree."""
    with conn:
        version = vectors_version(conn)
        total = int(conn.execute("SELECT count(*) FROM chunks").fetchall()[0][0])
        try:
            mirror = load_mirror(shadow_batches(conn, dim), dim, version, dtype, total=total, progress=progress,
                                 stop=stop)
            if mirror is None or len(mirror) == total:
                return mirror
        except _LayoutMismatch:
            pass
        return load_mirror(scan_batches(conn, dim), dim, version, dtype, total=total, progress=progress, stop=stop)


class _LayoutMismatch(Exception):
    """sqlite-vec's shadow tables are not laid out as this reader expects."""


def scan_batches(conn: Any, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(chunk ids, vectors)`` through the vec0 table, ``LOAD_BATCH`` rows at a time (portable, slow)."""
    ids: list[int] = []
    blobs: list[bytes] = []
    for cid, blob in conn.execute("SELECT chunk_id, embedding FROM vectors"):
        ids.append(cid)
        blobs.append(blob)
        if len(ids) == LOAD_BATCH:
            yield np.asarray(ids, dtype=np.int64), np.frombuffer(b"".join(blobs), np.float32).reshape(-1, dim)
            ids, blobs = [], []
    if ids:
        yield np.asarray(ids, dtype=np.int64), np.frombuffer(b"".join(blobs), np.float32).reshape(-1, dim)


def shadow_batches(conn: Any, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(chunk ids, vectors)`` read straight from sqlite-vec's shadow tables, one of its chunks at a time.

    The vec0 scan costs about 80 us a row (measured at 1M rows, docs/store.md); the shadow tables
    hold the same vectors as contiguous blobs with a validity bitmap and the rowids. Any surprise
    in their layout raises ``_LayoutMismatch`` and the caller scans instead.
    """
    try:
        meta = {cid: (size, validity, rowids) for cid, size, validity, rowids in
                conn.execute("SELECT chunk_id, size, validity, rowids FROM vectors_chunks")}
        blobs = conn.execute("SELECT rowid, vectors FROM vectors_vector_chunks00")  # no join: no sort of the blobs
    except Exception as exc:  # apsw.SQLError: no such table / column
        raise _LayoutMismatch(str(exc)) from exc
    for chunk, vectors in blobs:
        if chunk not in meta:
            raise _LayoutMismatch(f"vector chunk {chunk} has no entry in vectors_chunks")
        size, validity, rowids = meta[chunk]
        if len(vectors) != size * dim * 4 or len(rowids) != size * 8 or len(validity) * 8 < size:
            raise _LayoutMismatch("unexpected chunk sizes")
        valid = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")[:size].astype(bool)
        if valid.any():
            ids = np.frombuffer(rowids, np.int64)[valid]
            yield ids, np.frombuffer(vectors, np.float32).reshape(size, dim)[valid]


class MirrorCache:
    """The mirror of one open store, its loading state and what it costs."""

    def __init__(self, path: Path, dim: int, dtype: str) -> None:
        if dtype not in MIRROR_KINDS:
            raise ValueError(f"mirror must be one of {MIRROR_KINDS}, got {dtype!r}")
        self.path, self.dim, self.dtype = path, dim, dtype
        self.mirror: VectorMirror | None = None
        self.load_s: float | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loaded_rows = 0

    def current(self, conn: Any, *, wait: bool = False) -> VectorMirror | None:
        """The mirror at the store's current version; None while a background load runs (``wait``: load inline)."""
        version = vectors_version(conn)
        mirror = self.mirror
        if mirror is not None and mirror.version == version:
            return mirror
        if self._thread is not None and self._thread.is_alive():
            if not wait:
                return None
            self._thread.join()
            return self.current(conn, wait=True)
        rows = int(conn.execute("SELECT count(*) FROM chunks").fetchall()[0][0])
        if wait or rows <= BACKGROUND_ROWS:
            t0 = time.perf_counter()
            self.mirror = read_mirror(conn, self.dim, self._dtype_for(rows))
            self.load_s = time.perf_counter() - t0
            return self.mirror
        self._thread = threading.Thread(target=self._load, name=f"lacy-mirror {self.path.name}", daemon=True)
        self._thread.start()
        return None

    def _load(self) -> None:
        t0 = time.perf_counter()
        conn = connect(self.path, read_only=True)
        try:
            rows = int(conn.execute("SELECT count(*) FROM chunks").fetchall()[0][0])
            mirror = read_mirror(conn, self.dim, self._dtype_for(rows), stop=self._stop.is_set,
                                 progress=lambda done, total: setattr(self, "_loaded_rows", done))
        finally:
            conn.close()
        if mirror is not None:
            with self._lock:
                self.mirror, self.load_s = mirror, time.perf_counter() - t0

    def _dtype_for(self, rows: int) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "int8" if rows > COMPACT_ROWS else "float32"

    def close(self) -> None:
        """Stop a background load (it ends at its next batch) and drop the mirror."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.mirror = None

    def stats(self, rows: int) -> dict[str, Any]:
        """The mirror's kind, state and bytes (estimated from ``rows`` vectors when not loaded)."""
        loading = self._thread is not None and self._thread.is_alive()
        dtype = self.mirror.dtype if self.mirror is not None else self._dtype_for(rows)
        # Rows, int8 scales and one id run (a store that only grew): what a fresh load holds.
        estimate = rows * self.dim * (1 if dtype == "int8" else 4) + (4 * self.dim if dtype == "int8" else 0) + 16
        state = "loading" if loading else ("loaded" if self.mirror is not None else "not loaded")
        return {
            "mirror": dtype,
            "mirror_state": state + (f" {self._loaded_rows:,}/{rows:,}" if loading else ""),
            "mirror_bytes": self.mirror.nbytes if self.mirror is not None else estimate,
            "mirror_float32_bytes": rows * self.dim * 4,
            "mirror_load_s": None if self.load_s is None else round(self.load_s, 3),
        }
