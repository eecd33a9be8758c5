"""The chunk ids of a vector mirror's rows, held as runs of consecutive ids.

A store's chunk ids are SQLite rowids, handed out in ascending order, so the rows of a mirror
built from a fresh store carry the ids ``first, first + 1, ...``: one run. Each gap (a deleted or
re-ingested document, once the mirror is compacted) starts another. A run costs 16 bytes where
an id array costs 8 bytes a row: 16 bytes in all for a million chunks ingested in one go.
"""
from __future__ import annotations

import numpy as np


class RowIds:
    """Strictly ascending ids of rows ``0 .. n-1``: row ``r`` of run ``i`` has id ``first_id[i] + r - first_row[i]``."""

    def __init__(self) -> None:
        self._first_row = np.zeros(0, dtype=np.int64)
        self._first_id = np.zeros(0, dtype=np.int64)
        self.n = 0

    @classmethod
    def from_ids(cls, ids: np.ndarray) -> "RowIds":
        """Runs of strictly ascending ``ids``."""
        out = cls()
        out.append(ids)
        return out

    def __len__(self) -> int:
        return self.n

    @property
    def runs(self) -> int:
        """How many runs of consecutive ids there are."""
        return len(self._first_row)

    @property
    def nbytes(self) -> int:
        """Memory held: two int64 per run."""
        return self._first_row.nbytes + self._first_id.nbytes

    @property
    def last(self) -> int | None:
        """The id of the last row (the largest), None when empty."""
        if not self.n:
            return None
        return int(self._first_id[-1] + self.n - 1 - self._first_row[-1])

    def append(self, ids: np.ndarray) -> None:
        """Add rows ``n .. n + len(ids) - 1`` with these ids (strictly ascending, above :attr:`last`)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        last = self.last
        if np.any(np.diff(ids) <= 0) or (last is not None and ids[0] <= last):
            raise ValueError("row ids must be strictly ascending and above the last one held")
        starts = np.flatnonzero(np.diff(ids) != 1) + 1  # where a new run begins inside ``ids``
        if last is None or ids[0] != last + 1:
            starts = np.concatenate([[0], starts])
        self._first_row = np.concatenate([self._first_row, self.n + starts])
        self._first_id = np.concatenate([self._first_id, ids[starts]])
        self.n += len(ids)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows only."""
        keep = int(np.searchsorted(self._first_row, n, side="left"))
        self._first_row, self._first_id = self._first_row[:keep].copy(), self._first_id[:keep].copy()
        self.n = min(self.n, n)

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """The id of each row (rows must be in ``0 .. n-1``)."""
        rows = np.asarray(rows, dtype=np.int64)
        run = np.searchsorted(self._first_row, rows, side="right") - 1
        return self._first_id[run] + (rows - self._first_row[run])

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The row holding each id, -1 where no row does."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self.n:
            return np.full(len(ids), -1, dtype=np.int64)
        run = np.searchsorted(self._first_id, ids, side="right") - 1
        safe = run.clip(min=0)
        rows = self._first_row[safe] + (ids - self._first_id[safe])
        ends = np.append(self._first_row[1:], self.n)  # one past each run's last row
        return np.where((run >= 0) & (rows < ends[safe]), rows, -1)

    def all(self) -> np.ndarray:
        """Every row's id, as one int64 array (a copy: ``8 * n`` bytes)."""
        return self.ids_of(np.arange(self.n))
