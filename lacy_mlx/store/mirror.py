"""The fast search path: an in-memory float32 mirror of the store's vectors, searched with BLAS.

sqlite-vec's exact scan is several times slower than a matrix-vector product at 100k chunks, so
searches can go through this mirror instead. It is exact (same vectors, same cosine), and kept
consistent with the database by the store's ``vectors_version`` counter: a store applies its own
writes to the mirror as deltas, and any version it did not write itself (another process) makes
the mirror reload.
"""
from __future__ import annotations

import numpy as np


class VectorMirror:
    """Unit vectors and their chunk ids in a growable buffer; deleted rows are tombstoned, then compacted."""

    def __init__(self, dim: int, version: int) -> None:
        self.dim = dim
        self.version = version
        self._mat = np.zeros((0, dim), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._n = 0  # rows in use (alive or tombstoned)
        self._dead = 0
        self._row_of: dict[int, int] | None = None  # chunk id -> row, built on first delete

    def __len__(self) -> int:
        return self._n - self._dead

    @property
    def nbytes(self) -> int:
        """Memory held by the buffers."""
        return self._mat.nbytes + self._ids.nbytes + self._alive.nbytes

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows (amortised O(rows): the buffer doubles when full)."""
        n_new = len(ids)
        if self._n + n_new > len(self._ids):
            cap = max(self._n + n_new, 2 * len(self._ids), 1024)
            self._mat = _grow(self._mat, (cap, self.dim), self._n)
            self._ids = _grow(self._ids, (cap,), self._n)
            self._alive = _grow(self._alive, (cap,), self._n)
        sl = slice(self._n, self._n + n_new)
        self._mat[sl] = vectors
        self._ids[sl] = ids
        self._alive[sl] = True
        if self._row_of is not None:
            self._row_of.update(zip(ids.tolist(), range(self._n, self._n + n_new)))
        self._n += n_new

    def remove(self, ids: np.ndarray) -> None:
        """Tombstone rows by chunk id; compact once a quarter of the rows are dead."""
        if self._row_of is None:
            self._row_of = {int(c): r for r, c in enumerate(self._ids[: self._n].tolist())}
        for cid in ids.tolist():
            row = self._row_of.pop(int(cid), None)
            if row is not None and self._alive[row]:
                self._alive[row] = False
                self._mat[row] = 0.0  # scores 0 until compaction; masked below anyway
                self._dead += 1
        if self._dead * 4 > self._n:
            self._compact()

    def _compact(self) -> None:
        keep = np.flatnonzero(self._alive[: self._n])
        self._mat = np.ascontiguousarray(self._mat[keep])
        self._ids = self._ids[keep].copy()
        self._alive = np.ones(len(keep), dtype=bool)
        self._n, self._dead, self._row_of = len(keep), 0, None

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` chunk ids and cosine scores for a unit ``query``, best first; ``allowed`` restricts ids."""
        scores = self._mat[: self._n] @ query  # (n,) cosine: rows and query are unit length
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


def _grow(arr: np.ndarray, shape: tuple[int, ...], used: int) -> np.ndarray:
    out = np.zeros(shape, dtype=arr.dtype)
    out[:used] = arr[:used]
    return out
