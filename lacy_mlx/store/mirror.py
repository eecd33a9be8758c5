"""The fast search path: an in-memory mirror of the store's vectors, int8 (default) or float32.

sqlite-vec's exact scan is several times slower than a matrix-vector product at 100k chunks, so
searches can go through this mirror instead. ``float32`` holds the vectors as stored and scores
them exactly with BLAS (``chunks x dim x 4`` bytes). ``int8`` holds each component as an 8-bit
integer on a scale per dimension (``chunks x dim`` bytes, a quarter): its scores are approximate,
so the store takes more candidates than asked and rescores them exactly against the stored
float32 vectors. Row ids are runs of consecutive chunk ids (``rowids.RowIds``) and deleted rows a
sorted list until compaction, so the rows are nearly all a mirror holds (docs/store.md counts it).
The mirror is kept consistent with the database by the store's ``vectors_version`` counter: a
store applies its own writes as deltas, and a version it did not write (another process) makes
it reload.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from lacy_mlx.store.rowids import RowIds

try:  # SIMD int8 dot products (AVX-512 VNNI, NEON, ...); numpy below is the portable twin
    import simsimd
except ImportError:  # pragma: no cover - simsimd is a declared dependency
    simsimd = None

MIRROR_DTYPES = ("int8", "float32")
LOAD_BATCH = 65_536  # rows read and quantized at a time while loading
# A dimension's scale is set this far above the largest value seen in it, so that later rows
# rarely exceed it (each time one does, that dimension's column is requantized).
HEADROOM = 1.25


def grow_scales(scale: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Per-dimension scales (int8 step) covering ``vectors`` too: unchanged where they already fit."""
    need = np.abs(vectors).max(axis=0) / 127.0 if len(vectors) else np.zeros_like(scale)
    return np.where(need > scale, need * HEADROOM, scale).astype(np.float32)


def quantize(vectors: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 rows with ``rows * scale ~ vectors`` (a dimension whose scale is 0 holds only zeros)."""
    q = np.divide(vectors, scale, out=np.zeros(vectors.shape, np.float32), where=scale > 0)
    return np.rint(q).clip(-127, 127).astype(np.int8)


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
    """Vectors of ascending chunk ids in a growable buffer; deleted rows are listed, then compacted."""

    def __init__(self, dim: int, version: int, dtype: str = "int8") -> None:
        if dtype not in MIRROR_DTYPES:
            raise ValueError(f"mirror dtype must be one of {MIRROR_DTYPES}, got {dtype!r}")
        self.dim = dim
        self.version = version
        self.dtype = dtype
        self._mat = np.zeros((0, dim), dtype=np.int8 if dtype == "int8" else np.float32)
        self._scale = np.zeros(dim if dtype == "int8" else 0, dtype=np.float32)  # int8: each dimension's step
        self._ids = RowIds()  # rows 0 .. n-1 in use (alive or dead)
        self._dead = np.zeros(0, dtype=np.int64)  # sorted rows deleted since the last compaction

    @property
    def _n(self) -> int:
        return self._ids.n

    def __len__(self) -> int:
        return self._n - len(self._dead)

    @property
    def exact(self) -> bool:
        """Whether :meth:`search` scores are exact cosines (float32) or approximations to rescore (int8)."""
        return self.dtype == "float32"

    @property
    def nbytes(self) -> int:
        """Memory held: the row buffer (its whole capacity), the scales, the id runs, the deleted rows."""
        return self._mat.nbytes + self._scale.nbytes + self._ids.nbytes + self._dead.nbytes

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows in all without reallocating."""
        if rows > len(self._mat):
            grown = np.zeros((rows, self.dim), dtype=self._mat.dtype)
            grown[: self._n] = self._mat[: self._n]
            self._mat = grown

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows (amortised O(rows) when ``ids`` are above all held ones, as the store's new chunks are;
        otherwise the buffer is rebuilt in id order). An id already held is replaced."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        if not len(ids):
            return
        if np.any(np.diff(ids) <= 0):
            ids, first = np.unique(ids[::-1], return_index=True)  # the last vector given for an id wins
            vectors = vectors[::-1][first]
        if self._ids.last is not None and ids[0] <= self._ids.last:
            self.remove(ids)  # replaced ids go; dead rows at the end are dropped
            if self._ids.last is not None and ids[0] <= self._ids.last:
                self._merge(ids, vectors)
                return
        if self._n + len(ids) > len(self._mat):  # grow by an eighth: a big mirror is not doubled for one document
            self.reserve(max(self._n + len(ids), self._n + self._n // 8, 1024))
        rows = slice(self._n, self._n + len(ids))
        self._mat[rows] = self._encode(vectors)
        self._ids.append(ids)

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` as stored rows; for int8, first widen any dimension they exceed (requantizing its column)."""
        if self.dtype == "float32":
            return vectors
        scale = grow_scales(self._scale, vectors)
        changed = np.flatnonzero(scale != self._scale)
        if len(changed) and self._n:
            held = self._mat[: self._n, changed].astype(np.float32) * (self._scale[changed] / scale[changed])
            self._mat[: self._n, changed] = np.rint(held).astype(np.int8)
        self._scale = scale
        return quantize(vectors, scale)

    def _merge(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Rebuild the buffer with new rows among the held ones (ids not above the last held: rare)."""
        self._compact()
        new_rows = self._encode(vectors)
        all_ids = np.concatenate([self._ids.all(), ids])
        order = np.argsort(all_ids, kind="stable")
        self._mat = np.concatenate([self._mat[: self._n], new_rows])[order]
        self._ids = RowIds.from_ids(all_ids[order])

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each chunk id, -1 where absent or deleted."""
        rows = self._ids.rows_of(ids)
        if len(self._dead):
            rows[np.isin(rows, self._dead)] = -1
        return rows

    def score_ids(self, query: np.ndarray, ids: np.ndarray) -> dict[int, float]:
        """Scores of a unit ``query`` against these chunk ids only (approximate for int8); absent ids left out."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = self._rows(ids)
        ok = rows >= 0
        mat = self._mat[rows[ok]].astype(np.float32)
        if self.dtype == "int8":
            mat *= self._scale
        return dict(zip(ids[ok].tolist(), (mat @ query).tolist()))

    def remove(self, ids: np.ndarray) -> None:
        """Delete rows by chunk id: dead rows at the end are dropped at once, others listed until a
        quarter of the rows are dead, then compacted."""
        rows = self._rows(np.unique(np.asarray(ids, dtype=np.int64)))
        self._dead = np.union1d(self._dead, rows[rows >= 0])
        tail = len(self._dead) - int(np.searchsorted(self._dead - np.arange(len(self._dead)), self._n - len(self._dead)))
        if tail:  # the last ``tail`` rows are all dead: cut them off
            self._dead = self._dead[: len(self._dead) - tail]
            self._ids.truncate(self._n - tail)
        if len(self._dead) * 4 > self._n:
            self._compact()

    def _compact(self) -> None:
        if not len(self._dead):
            return
        keep = np.setdiff1d(np.arange(self._n), self._dead, assume_unique=True)
        self._mat = np.ascontiguousarray(self._mat[keep])
        self._ids = RowIds.from_ids(self._ids.ids_of(keep))
        self._dead = np.zeros(0, dtype=np.int64)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine of a unit ``query`` to every row in use (approximate for int8), float32 (n,)."""
        if self.dtype == "float32":
            return self._mat[: self._n] @ query
        # sum_j q_j s_j r_j: the scales fold into the query, which is then quantized on one step of its own.
        folded = np.asarray(query, dtype=np.float32) * self._scale
        step = float(np.abs(folded).max()) / 127.0 or 1.0
        out = int8_dots(self._mat[: self._n], np.rint(folded / step).astype(np.int8))
        out *= step
        return out

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` chunk ids and scores for a unit ``query``, best first; ``allowed`` restricts ids."""
        scores = self.scores(query)  # (n,)
        if allowed is not None:
            ok = np.zeros(self._n, dtype=bool)
            rows = self._rows(np.asarray(allowed, dtype=np.int64))
            ok[rows[rows >= 0]] = True
            scores = np.where(ok, scores, -np.inf)
            n_ok = int(ok.sum())
        else:
            scores[self._dead] = -np.inf
            n_ok = len(self)
        k = min(k, n_ok)
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        # Sort by score, then row (= chunk id order), so ties come out in a stable order.
        top = top[np.lexsort((top, -scores[top]))]
        return self._ids.ids_of(top), scores[top].astype(np.float32)


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

