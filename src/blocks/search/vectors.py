"""Input checking and small numeric functions shared by every vector index.

Theory of operation: each public entry point converts what the caller passed (numpy arrays,
torch tensors, nested lists) into canonical numpy arrays *before* touching any state, so a
bad call raises ``InvalidArgument`` and leaves the index as it was. Vectors become C-contiguous
float32 ``(n, dim)``; ids become int64 ``(n,)``. Cosine indexes normalise rows here too, which
is why zero vectors are refused for that metric.

``brute_force`` is the reference answer used by tests and the contract: float64 numpy, full
sort with ties broken by smaller id, the padding rule of ``blocks.search.api``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from blocks.core.errors import InvalidArgument
from blocks.search.api import K_MAX, FloatArray, IdArray, Metric

__all__ = [
    "BATCH_ROWS_MAX",
    "DIM_MAX",
    "allowed_mask",
    "as_float32_rows",
    "as_ids",
    "as_vectors",
    "atomic_write",
    "brute_force",
    "check_k",
    "normalize_rows",
]

DIM_MAX = 65_536
"""Largest vector dimension any index accepts."""

BATCH_ROWS_MAX = 10_000_000
"""Largest number of rows accepted in one call."""


def _to_numpy(value: Any) -> np.ndarray[Any, Any]:
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if detach is not None:  # a torch tensor, without importing torch here
        tensor = detach()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
            tensor = tensor.float()
        return np.asarray(tensor.cpu().numpy())
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise InvalidArgument(f"cannot read as an array: {error}") from None


NOT_FINITE = "vectors contain NaN, infinite values or values past float32's range"


def as_vectors(value: Any, dim: int, *, metric: Metric | None = None) -> FloatArray:
    """Return ``value`` as a finite float32 ``(n, dim)`` array (normalised for cosine)."""
    vectors = as_float32_rows(value, dim)
    if metric is Metric.COSINE:
        # The row norms are finite exactly when every entry is (a float32 square cannot
        # overflow float64), so cosine checks n norms instead of n x dim entries.
        norms = _row_norms(vectors)
        if not np.isfinite(norms).all():
            raise InvalidArgument(NOT_FINITE)
        return _divide_rows(vectors, norms)
    if not np.isfinite(vectors).all():
        raise InvalidArgument(NOT_FINITE)
    return vectors


def as_float32_rows(value: Any, dim: int) -> FloatArray:
    """``value`` as a C-contiguous float32 ``(n, dim)`` array, its shape, size and dtype
    checked but **not** its values: the caller checks finiteness (``as_vectors`` does), and a
    value past float32's range becomes infinite here, so that check refuses it. The array is
    ``value`` itself when it already is one, so the caller must not write to it."""
    array = _to_numpy(value)
    if array.ndim == 1 and array.shape[0] == dim:
        array = array.reshape(1, dim)
    if array.ndim != 2:
        raise InvalidArgument(f"vectors must be 2-D (n, {dim}), got shape {array.shape}")
    if array.shape[1] != dim:
        raise InvalidArgument(f"vectors have dimension {array.shape[1]}, index has {dim}")
    if array.shape[0] > BATCH_ROWS_MAX:
        raise InvalidArgument(f"{array.shape[0]} rows exceed the limit of {BATCH_ROWS_MAX}")
    if array.dtype.kind not in "fiub":
        raise InvalidArgument(f"vectors must be numeric, got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # past float32's range: inf, refused by the caller
        rows: FloatArray = np.ascontiguousarray(array, dtype=np.float32)
    return rows


def normalize_rows(vectors: FloatArray) -> FloatArray:
    """Rows scaled to unit length; raises ``InvalidArgument`` for a zero row."""
    return _divide_rows(vectors, _row_norms(vectors))


def _row_norms(vectors: FloatArray) -> npt.NDArray[np.float64]:
    # Squares summed in float64 without a float64 copy of the rows: 5x cheaper than norm()
    # over a float64 copy for a 200 x 384 batch (a search's overhead on small batches), and
    # within 2e-8 of it.
    norms: npt.NDArray[np.float64] = np.sqrt(
        np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    )
    return norms


def _divide_rows(vectors: FloatArray, norms: npt.NDArray[np.float64]) -> FloatArray:
    if vectors.shape[0] and not (norms > 0).all():
        raise InvalidArgument("cosine metric cannot use a zero vector")
    if vectors.shape[0] and norms.min() < np.finfo(np.float32).tiny:
        # A subnormal norm rounds in float32 ([1e-45, 1e-45]: 1.98e-45 -> 1.4e-45, and the
        # row came out of length 1.41): divide those batches in float64.
        return np.ascontiguousarray(vectors / norms[:, None], dtype=np.float32)
    return np.ascontiguousarray(vectors / norms.astype(np.float32)[:, None], dtype=np.float32)


def as_ids(value: Any, *, expected: int | None = None) -> IdArray:
    """Return ``value`` as unique non-negative int64 ids, ``(n,)``."""
    array = _to_numpy(value)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise InvalidArgument(f"ids must be 1-D, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise InvalidArgument(f"ids must be integers, got dtype {array.dtype}")
    if array.dtype.kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise InvalidArgument("ids must fit in int64")
    ids = np.ascontiguousarray(array, dtype=np.int64)
    if expected is not None and ids.shape[0] != expected:
        raise InvalidArgument(f"got {ids.shape[0]} ids for {expected} vectors")
    if ids.size and int(ids.min()) < 0:
        raise InvalidArgument("ids must be >= 0")
    if np.unique(ids).shape[0] != ids.shape[0]:
        raise InvalidArgument("ids repeat within one call")
    return ids


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InvalidArgument(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= int(k) <= K_MAX:
        raise InvalidArgument(f"k must be in 1..{K_MAX}, got {k}")
    return int(k)


def allowed_mask(filter: Any, ids: IdArray) -> npt.NDArray[np.bool_]:
    """Boolean mask over ``ids`` of the entries a search filter lets through."""
    if callable(filter):
        predicate: Callable[[IdArray], Any] = filter
        mask = np.asarray(predicate(ids), dtype=np.bool_)
        if mask.shape != ids.shape:
            raise InvalidArgument(f"filter returned shape {mask.shape}, expected {ids.shape}")
        return mask
    allowed = _to_numpy(filter)
    if allowed.size == 0:
        return np.zeros(ids.shape, dtype=np.bool_)
    if allowed.ndim != 1 or allowed.dtype.kind not in "iu":
        raise InvalidArgument("a filter must be a 1-D sequence of integer ids or a callable")
    return np.isin(ids, allowed.astype(np.int64))


def brute_force(
    corpus_ids: IdArray,
    corpus: FloatArray,
    queries: FloatArray,
    k: int,
    metric: Metric,
) -> tuple[IdArray, npt.NDArray[np.float64]]:
    """Reference top-k in float64: full lexicographic sort on (distance, id)."""
    data = corpus.astype(np.float64)
    query = queries.astype(np.float64)
    if metric is Metric.COSINE:
        data = data / np.linalg.norm(data, axis=1, keepdims=True)
        query = query / np.linalg.norm(query, axis=1, keepdims=True)
    if metric is Metric.L2:
        scores = ((query[:, None, :] - data[None, :, :]) ** 2).sum(axis=2)
        keys = scores
    else:
        scores = query @ data.T
        keys = -scores
    out_ids = np.full((query.shape[0], k), -1, dtype=np.int64)
    out_dist = np.full((query.shape[0], k), metric.worst, dtype=np.float64)
    take = min(k, corpus_ids.shape[0])
    for row in range(query.shape[0]):
        order = np.lexsort((corpus_ids, keys[row]))[:take]
        out_ids[row, :take] = corpus_ids[order]
        out_dist[row, :take] = scores[row, order]
    return out_ids, out_dist


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename over it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise
