"""The fast search path: an in-memory mirror of the store's vectors, int8 (default) or float32.

sqlite-vec's exact scan is several times slower than a matrix-vector product at 100k chunks, so
searches can go through this mirror instead. ``float32`` holds the vectors as stored and scores
them exactly with BLAS (``chunks x dim x 4`` bytes). ``int8`` holds each vector as 8-bit integers
with one float scale per row (a quarter of the memory): its scores are approximate, so the store
takes more candidates than asked and rescores them exactly against the stored float32 vectors.
The mirror is kept consistent with the database by the store's ``vectors_version`` counter: a
store applies its own writes as deltas, and a version it did not write (another process) makes
it reload.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

try:  # SIMD int8 dot products (AVX-512 VNNI, NEON, ...); numpy below is the portable twin
    import simsimd
except ImportError:  # pragma: no cover - simsimd is a declared dependency
    simsimd = None

MIRROR_DTYPES = ("int8", "float32")
LOAD_BATCH = 65_536  # rows read and quantized at a time while loading


def quantize_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(int8 rows, float32 scales)`` with ``rows * scales[:, None] ~ vectors`` (each row's max maps to 127)."""
    scale = np.abs(vectors).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    rows = np.rint(vectors / scale[:, None]).astype(np.int8)
    return rows, scale.astype(np.float32)


def int8_dots(mat: np.ndarray, q8: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``mat @ q8`` for int8 ``mat`` (n, d) and ``q8`` (d,), as float32 (n,); exact integer sums."""
    n = len(mat)
    out = np.empty(n, dtype=np.float32) if out is None else out[:n]
    if n == 0:
        return out
    if simsimd is not None:
        # One thread: starting threads per call cost ~15 ms on a busy 2-core machine (docs/store.md).
        simsimd.cdist(q8[None], mat, metric="dot", out=out.reshape(1, n), out_dtype="float32", threads=1)
        return out
    return int8_dots_numpy(mat, q8, out)


def int8_dots_numpy(mat: np.ndarray, q8: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The plain-numpy twin of :func:`int8_dots` (blocks widened to float32, then BLAS)."""
    qf = q8.astype(np.float32)
    for start in range(0, len(mat), LOAD_BATCH):
        out[start : start + LOAD_BATCH] = mat[start : start + LOAD_BATCH].astype(np.float32) @ qf
    return out


class VectorMirror:
    """Vectors and their chunk ids in growable buffers; deleted rows are tombstoned, then compacted."""

    def __init__(self, dim: int, version: int, dtype: str = "int8") -> None:
        if dtype not in MIRROR_DTYPES:
            raise ValueError(f"mirror dtype must be one of {MIRROR_DTYPES}, got {dtype!r}")
        self.dim = dim
        self.version = version
        self.dtype = dtype
        self._mat = np.zeros((0, dim), dtype=np.int8 if dtype == "int8" else np.float32)
        self._scale = np.zeros(0, dtype=np.float32)  # int8 only: each row's scale
        self._ids = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._n = 0  # rows in use (alive or tombstoned)
        self._dead = 0
        self._row_of: dict[int, int] | None = None  # chunk id -> row, built on first delete
        self._sorted = True  # ids ascending (the store's appends keep them so): rows found by bisection

    def __len__(self) -> int:
        return self._n - self._dead

    @property
    def exact(self) -> bool:
        """Whether :meth:`search` scores are exact cosines (float32) or approximations to rescore (int8)."""
        return self.dtype == "float32"

    @property
    def nbytes(self) -> int:
        """Memory held by the buffers."""
        return self._mat.nbytes + self._scale.nbytes + self._ids.nbytes + self._alive.nbytes

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows in all without reallocating."""
        if rows > len(self._ids):
            self._mat = _grow(self._mat, (rows, self.dim), self._n)
            self._ids = _grow(self._ids, (rows,), self._n)
            self._alive = _grow(self._alive, (rows,), self._n)
            if self.dtype == "int8":
                self._scale = _grow(self._scale, (rows,), self._n)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows (amortised O(rows): the buffers double when full)."""
        n_new = len(ids)
        if self._n + n_new > len(self._ids):
            self.reserve(max(self._n + n_new, 2 * len(self._ids), 1024))
        if n_new and ((self._n and ids[0] <= self._ids[self._n - 1]) or np.any(np.diff(ids) <= 0)):
            self._sorted = False
        sl = slice(self._n, self._n + n_new)
        if self.dtype == "int8":
            self._mat[sl], self._scale[sl] = quantize_rows(np.asarray(vectors, dtype=np.float32))
        else:
            self._mat[sl] = vectors
        self._ids[sl] = ids
        self._alive[sl] = True
        if self._row_of is not None:
            self._row_of.update(zip(ids.tolist(), range(self._n, self._n + n_new)))
        self._n += n_new

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each chunk id, -1 where absent or deleted."""
        if self._n == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        if self._sorted and self._row_of is None:
            held = self._ids[: self._n]
            pos = np.searchsorted(held, ids).clip(max=self._n - 1)
            rows = np.where(held[pos] == ids, pos, -1)
        else:
            if self._row_of is None:
                self._row_of = {int(c): r for r, c in enumerate(self._ids[: self._n].tolist())}
            rows = np.asarray([self._row_of.get(int(c), -1) for c in ids.tolist()], dtype=np.int64)
        ok = rows >= 0
        rows[ok] = np.where(self._alive[rows[ok]], rows[ok], -1)
        return rows

    def score_ids(self, query: np.ndarray, ids: np.ndarray) -> dict[int, float]:
        """Scores of a unit ``query`` against these chunk ids only (approximate for int8); absent ids left out."""
        rows = self._rows(np.asarray(ids, dtype=np.int64))
        ok = rows >= 0
        mat = self._mat[rows[ok]].astype(np.float32)
        if self.dtype == "int8":
            mat *= self._scale[rows[ok], None]
        return dict(zip(np.asarray(ids)[ok].tolist(), (mat @ query).tolist()))

    def remove(self, ids: np.ndarray) -> None:
        """Tombstone rows by chunk id; compact once a quarter of the rows are dead."""
        for row in self._rows(np.unique(np.asarray(ids, dtype=np.int64))).tolist():
            if row >= 0:
                self._alive[row] = False
                self._mat[row] = 0  # scores 0 until compaction; masked below anyway
                self._dead += 1
        if self._dead * 4 > self._n:
            self._compact()

    def _compact(self) -> None:
        keep = np.flatnonzero(self._alive[: self._n])
        self._mat = np.ascontiguousarray(self._mat[keep])
        if self.dtype == "int8":
            self._scale = self._scale[keep].copy()
        self._ids = self._ids[keep].copy()
        self._alive = np.ones(len(keep), dtype=bool)
        self._n, self._dead = len(keep), 0
        if self._row_of is not None:
            self._row_of = {int(c): r for r, c in enumerate(self._ids.tolist())}

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine of a unit ``query`` to every row in use (approximate for int8), float32 (n,)."""
        if self.dtype == "float32":
            return self._mat[: self._n] @ query
        q_scale = float(np.abs(query).max()) / 127.0 or 1.0
        q8 = np.rint(query / q_scale).astype(np.int8)
        out = int8_dots(self._mat[: self._n], q8)
        out *= self._scale[: self._n]
        out *= q_scale
        return out

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` chunk ids and scores for a unit ``query``, best first; ``allowed`` restricts ids."""
        scores = self.scores(query)  # (n,)
        mask = self._alive[: self._n]
        if allowed is not None:
            mask = mask & np.isin(self._ids[: self._n], allowed)
        if self._dead or allowed is not None:
            scores = np.where(mask, scores, -np.inf)
        n_ok = int(mask.sum()) if (self._dead or allowed is not None) else self._n
        k = min(k, n_ok)
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        # Sort by score, then chunk id, so ties come out in a stable order.
        order = np.lexsort((self._ids[top], -scores[top]))
        top = top[order]
        return self._ids[top].copy(), scores[top].astype(np.float32)


def load_mirror(batches: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, version: int, dtype: str, *,
                total: int = 0, progress: Callable[[int, int], None] | None = None,
                stop: Callable[[], bool] | None = None) -> VectorMirror | None:
    """A mirror of ``(chunk ids, float32 vectors)`` batches, quantized batch by batch (so only one
    batch is ever held as float32); None if ``stop()`` turned true on the way."""
    mirror = VectorMirror(dim, version, dtype)
    mirror.reserve(total)  # one allocation instead of doublings
    for ids, vectors in batches:
        mirror.add(ids, vectors)
        if progress:
            progress(len(mirror), total)
        if stop is not None and stop():
            return None
    return mirror


def _grow(arr: np.ndarray, shape: tuple[int, ...], used: int) -> np.ndarray:
    out = np.zeros(shape, dtype=arr.dtype)
    out[:used] = arr[:used]
    return out
