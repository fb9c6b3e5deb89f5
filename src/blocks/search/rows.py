"""``VectorRows``: a readable float32 copy of the vectors a shard holds, and export paging.

Theory of operation. A faiss index cannot give its vectors back (HNSW and IVF-PQ keep them
transformed or not at all), yet moving ids to a new shard must read them. A shard node keeps
``VectorRows`` beside its index: a dense ``(capacity, dim)`` float32 array grown by doubling,
an id -> row map, and removal by moving the last row into the hole, so add, remove and lookup
are O(rows touched). It is changed with the index (after the index accepted the change, so it
never holds what the index refused), written into every snapshot as ``rows.npy`` and
``row_ids.npy``, and rebuilt by the journal's replay. The price is one more copy of the raw
vectors in memory and on disk.

``select_page`` is the pure paging rule of an export: ids in ascending order after a cursor,
those a predicate keeps, at most ``limit`` of them, scanning at most ``scan_max`` ids per
call, so every call is bounded however few ids match.
"""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO, TypeVar

import numpy as np

from blocks.core.errors import Corruption, FailedPrecondition
from blocks.search.api import FloatArray, IdArray
from blocks.search.vectors import atomic_write

__all__ = ["EXPORT_ROWS_MAX", "EXPORT_SCAN_MAX", "VectorRows", "select_page"]

EXPORT_ROWS_MAX = 4_096
"""Most rows (vectors or documents) one export call returns."""
EXPORT_SCAN_MAX = 65_536
"""Most ids one export call examines with its predicate."""
ROWS_FILE, ROW_IDS_FILE = "rows.npy", "row_ids.npy"
K = TypeVar("K", int, str)


class VectorRows:
    """Id -> float32 row, kept in step with a shard's index (see the module docstring).

    ``complete`` is False when the node loaded an index written before this copy existed:
    then the copy does not hold every vector and an export must refuse.
    """

    def __init__(self) -> None:
        self._data: FloatArray = np.zeros((0, 0), dtype=np.float32)
        self._ids: IdArray = np.zeros(0, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self.complete = True

    def __len__(self) -> int:
        return len(self._row_of)

    def add(self, ids: IdArray, data: FloatArray) -> None:
        """Store new rows (the index already refused repeats, so none is present)."""
        count = len(self._row_of)
        if self._data.shape[1] != data.shape[1]:
            assert count == 0, "a node's dimension never changes"
            self._data = np.zeros((0, data.shape[1]), dtype=np.float32)
        need = count + data.shape[0]
        if need > self._data.shape[0]:
            capacity = max(need, 2 * self._data.shape[0], 64)
            grown = np.zeros((capacity, data.shape[1]), dtype=np.float32)
            grown[:count] = self._data[:count]
            grown_ids = np.zeros(capacity, dtype=np.int64)
            grown_ids[:count] = self._ids[:count]
            self._data, self._ids = grown, grown_ids
        self._data[count:need] = data
        self._ids[count:need] = ids
        for offset, vector_id in enumerate(np.asarray(ids).tolist()):
            assert vector_id not in self._row_of
            self._row_of[vector_id] = count + offset

    def remove(self, ids: Iterable[int]) -> None:
        """Forget ``ids``; unknown ones are ignored."""
        for vector_id in ids:
            row = self._row_of.pop(int(vector_id), None)
            if row is None:
                continue
            last = len(self._row_of)  # the row count after the pop
            if row != last:
                moved = int(self._ids[last])
                self._data[row] = self._data[last]
                self._ids[row] = moved
                self._row_of[moved] = row

    def sorted_ids(self) -> IdArray:
        return np.sort(self._ids[: len(self._row_of)])

    def get(self, ids: Iterable[int]) -> tuple[IdArray, FloatArray]:
        """The present ones of ``ids`` (in the order given) and their rows."""
        present = [int(i) for i in ids if int(i) in self._row_of]
        rows = [self._row_of[i] for i in present]
        dim = self._data.shape[1]
        data = self._data[rows] if rows else np.zeros((0, dim), dtype=np.float32)
        return np.array(present, dtype=np.int64), data

    def require_complete(self) -> None:
        if not self.complete:
            raise FailedPrecondition(
                "this node's index was written before it kept a readable copy of its vectors: "
                "re-add them (or save after re-adding) before exporting"
            )

    def save(self, directory: str) -> None:
        count = len(self._row_of)
        for name, array in ((ROWS_FILE, self._data[:count]), (ROW_IDS_FILE, self._ids[:count])):
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
            atomic_write(os.path.join(directory, name), _writer(buffer.getvalue()))

    def load(self, directory: str) -> bool:
        """Load a saved copy; False when ``directory`` has none."""
        rows_path, ids_path = (
            os.path.join(directory, ROWS_FILE),
            os.path.join(directory, ROW_IDS_FILE),
        )
        if not os.path.exists(rows_path) or not os.path.exists(ids_path):
            return False
        try:
            data = np.load(rows_path, allow_pickle=False).astype(np.float32)
            ids = np.load(ids_path, allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as error:
            raise Corruption(f"cannot read the vector copy in {directory}: {error}") from None
        if data.ndim != 2 or ids.shape != (data.shape[0],):
            raise Corruption(f"the vector copy in {directory} has shapes {data.shape}, {ids.shape}")
        self._data = np.zeros((0, 0), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._row_of = {}
        self.complete = True
        if ids.size:
            self.add(ids, data)
        return True


def _writer(payload: bytes) -> Callable[[BinaryIO], None]:
    def write(handle: BinaryIO) -> None:
        handle.write(payload)

    return write


def select_page(
    sorted_keys: Sequence[K],
    after: K | None,
    keep: Callable[[K], bool],
    *,
    limit: int,
    scan_max: int = EXPORT_SCAN_MAX,
) -> tuple[list[K], K | None, bool]:
    """One export page: ``(chosen keys, next cursor, done)``.

    Examines the keys greater than ``after`` (all when ``None``) in ascending order, at most
    ``scan_max`` of them, and chooses those ``keep`` accepts, at most ``limit``. The next
    call passes the returned cursor; ``done`` when no key is left to examine.
    """
    assert limit >= 1 and scan_max >= 1
    start = 0 if after is None else bisect.bisect_right(sorted_keys, after)
    chosen: list[K] = []
    cursor = after
    examined = start
    for key in sorted_keys[start : start + scan_max]:
        cursor, examined = key, examined + 1
        if keep(key):
            chosen.append(key)
            if len(chosen) >= limit:
                break
    return chosen, cursor, examined >= len(sorted_keys)
