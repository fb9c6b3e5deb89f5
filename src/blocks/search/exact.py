"""``ExactIndex``: brute-force k-NN in torch on the CPU or a CUDA device.

Theory of operation: vectors live in one preallocated ``(capacity, dim)`` tensor on the chosen
device, in the compute dtype (float32 by default; float16 or bfloat16 halve the bytes each
search reads, which is what bounds exact search on a GPU). Alongside it: float32 squared norms
(for L2), the ids per row (a numpy array, the source of truth, and a device copy for
tie-breaking), and a dict from id to row.

* ``add`` validates everything first, grows the capacity by doubling (amortised O(1) per row,
  bounded by ``size_max``), then copies rows in.
* ``remove`` moves the last row into each removed slot, so storage stays dense and a search
  never has to skip holes.
* ``search`` runs ``blocks.search.topk.tiled_topk``; its memory is bounded by the tile sizes,
  not by the number of queries or rows. The defaults (256 queries x 16,384 rows, a 16 MiB
  score tile) were tuned on a 2-core CPU: smaller tiles pay per-tile overhead, larger ones
  leave the last-level cache; on a GPU larger tiles (e.g. 4096 x 262,144) suit better.

Results are exact and deterministic: ties are broken by smaller id. With a float16/bfloat16
compute dtype the scores are rounded, so near-ties may order differently from float32.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from blocks.core.errors import Corruption, FailedPrecondition, InvalidArgument
from blocks.search.api import DimensionAndMetric, Filter, FloatArray, IdArray, Metric, SearchResult
from blocks.search.topk import tiled_topk
from blocks.search.vectors import (
    DIM_MAX,
    allowed_mask,
    as_ids,
    as_vectors,
    atomic_write,
    check_k,
)

__all__ = ["ExactIndex", "resolve_device"]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

SIZE_MAX_DEFAULT = 100_000_000
"""Default bound on rows per index."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when present; an unavailable CUDA request is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InvalidArgument(f"unknown device {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument("device 'cuda' requested but torch sees no CUDA device")
    return resolved


class ExactIndex(DimensionAndMetric):
    """Exact k-NN over ``dim``-dimensional vectors; see the module docstring."""

    def __init__(
        self,
        dim: int,
        metric: str | Metric = Metric.L2,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        query_tile: int = 256,
        corpus_tile: int = 16_384,
        size_max: int = SIZE_MAX_DEFAULT,
    ) -> None:
        if not isinstance(dim, int) or not 1 <= dim <= DIM_MAX:
            raise InvalidArgument(f"dim must be in 1..{DIM_MAX}, got {dim!r}")
        if dtype not in _DTYPES:
            raise InvalidArgument(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if query_tile < 1 or corpus_tile < 1 or size_max < 1:
            raise InvalidArgument("query_tile, corpus_tile and size_max must be >= 1")
        self._dim = dim
        self._metric = Metric.parse(metric)
        self._device = resolve_device(device)
        self._dtype = _DTYPES[dtype]
        self._dtype_name = dtype
        self._query_tile = query_tile
        self._corpus_tile = corpus_tile
        self._size_max = size_max
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._count = 0
        self._data = torch.empty((0, self._dim), dtype=self._dtype, device=self._device)
        self._norms = torch.empty((0,), dtype=torch.float32, device=self._device)
        self._ids_device = torch.empty((0,), dtype=torch.int64, device=self._device)
        self._ids: IdArray = np.empty((0,), dtype=np.int64)
        self._row_of: dict[int, int] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    def __len__(self) -> int:
        return self._count

    def __contains__(self, item: object) -> bool:
        return isinstance(item, int | np.integer) and int(item) in self._row_of

    def ids(self) -> IdArray:
        """A copy of the live ids, in storage order."""
        return self._ids[: self._count].copy()

    def vectors(self) -> FloatArray:
        """A float32 copy of the live vectors (normalised for cosine), in storage order."""
        return self._data[: self._count].float().cpu().numpy().copy()

    def _reserve(self, needed: int) -> None:
        capacity = self._data.shape[0]
        if needed <= capacity:
            return
        new_capacity = min(self._size_max, max(needed, 2 * capacity, 1024))
        data = torch.empty((new_capacity, self._dim), dtype=self._dtype, device=self._device)
        norms = torch.empty((new_capacity,), dtype=torch.float32, device=self._device)
        ids_device = torch.empty((new_capacity,), dtype=torch.int64, device=self._device)
        ids = np.empty((new_capacity,), dtype=np.int64)
        data[: self._count] = self._data[: self._count]
        norms[: self._count] = self._norms[: self._count]
        ids_device[: self._count] = self._ids_device[: self._count]
        ids[: self._count] = self._ids[: self._count]
        self._data, self._norms, self._ids_device, self._ids = data, norms, ids_device, ids

    def add(self, ids: Any, vectors: Any) -> None:
        vectors_np = as_vectors(vectors, self._dim, metric=self._metric)
        ids_np = as_ids(ids, expected=vectors_np.shape[0])
        present = [int(i) for i in ids_np if int(i) in self._row_of]
        if present:
            raise InvalidArgument(f"ids already present: {present[:5]}")
        if self._count + ids_np.shape[0] > self._size_max:
            raise FailedPrecondition(f"index would exceed size_max={self._size_max} rows")
        with self._lock:
            start, stop = self._count, self._count + ids_np.shape[0]
            self._reserve(stop)
            rows = torch.from_numpy(vectors_np).to(self._device)
            self._data[start:stop] = rows.to(self._dtype)
            self._norms[start:stop] = (rows * rows).sum(dim=1)
            self._ids_device[start:stop] = torch.from_numpy(ids_np).to(self._device)
            self._ids[start:stop] = ids_np
            for offset, item in enumerate(ids_np.tolist()):
                self._row_of[item] = start + offset
            self._count = stop

    def remove(self, ids: Any) -> int:
        ids_np = as_ids(ids)
        removed = 0
        with self._lock:
            for item in ids_np.tolist():
                row = self._row_of.pop(item, None)
                if row is None:
                    continue
                last = self._count - 1
                if row != last:
                    moved = int(self._ids[last])
                    self._data[row] = self._data[last]
                    self._norms[row] = self._norms[last]
                    self._ids_device[row] = self._ids_device[last]
                    self._ids[row] = moved
                    self._row_of[moved] = row
                self._count = last
                removed += 1
        return removed

    def search(self, queries: Any, k: int, filter: Filter | None = None) -> SearchResult:
        k = check_k(k)
        queries_np = as_vectors(queries, self._dim, metric=self._metric)
        count = self._count
        valid = None
        if filter is not None:
            mask = allowed_mask(filter, self._ids[:count])
            valid = torch.from_numpy(mask).to(self._device)
        queries_t = torch.from_numpy(queries_np).to(self._device)
        with torch.inference_mode():
            distances, ids = tiled_topk(
                queries_t,
                self._data[:count],
                self._norms[:count],
                self._ids_device[:count],
                k,
                self._metric,
                valid=valid,
                query_tile=self._query_tile,
                corpus_tile=self._corpus_tile,
            )
        return SearchResult(ids=ids.cpu().numpy(), distances=distances.cpu().numpy())

    def save(self, path: str) -> None:
        header = np.array([self._dim], dtype=np.int64)

        def write(handle: Any) -> None:
            np.savez(
                handle,
                kind=np.array("exact"),
                metric=np.array(self._metric.value),
                dim=header,
                ids=self.ids(),
                vectors=self.vectors(),
            )

        atomic_write(path, write)

    def load(self, path: str) -> None:
        ids, vectors = read_saved(path, "exact", self._dim, self._metric)
        fresh = ExactIndex(
            self._dim,
            self._metric,
            device=str(self._device),
            dtype=self._dtype_name,
            query_tile=self._query_tile,
            corpus_tile=self._corpus_tile,
            size_max=self._size_max,
        )
        fresh.add(ids, vectors)  # validates everything before this index changes
        with self._lock:
            self._count, self._data, self._norms = fresh._count, fresh._data, fresh._norms
            self._ids_device, self._ids, self._row_of = (
                fresh._ids_device,
                fresh._ids,
                fresh._row_of,
            )


def read_saved(path: str, kind: str, dim: int, metric: Metric) -> tuple[IdArray, FloatArray]:
    """Read an exact-index file, checking its kind, dimension and metric."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            saved_kind = str(archive["kind"])
            saved_metric = str(archive["metric"])
            saved_dim = int(archive["dim"][0])
            ids = np.asarray(archive["ids"], dtype=np.int64)
            vectors = np.asarray(archive["vectors"], dtype=np.float32)
    except FileNotFoundError:
        raise
    except Exception as error:  # zip, CRC and format errors all mean the same here
        raise Corruption(f"cannot read index file {path}: {type(error).__name__}") from None
    if saved_kind != kind:
        raise InvalidArgument(f"{path} holds a {saved_kind!r} index, not {kind!r}")
    if saved_dim != dim or saved_metric != metric.value:
        raise InvalidArgument(
            f"{path} holds dim={saved_dim} metric={saved_metric}, index has dim={dim} "
            f"metric={metric.value}"
        )
    return ids, vectors
