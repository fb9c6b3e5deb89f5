"""The wire form of vector batches: ``VectorBatch`` messages <-> ``(rows, dim)`` float32 arrays.

Row-major little-endian float32 bytes, so a batch crosses the wire as one ``bytes`` field and
is decoded without a copy per value. Shared by the service, the client and the coordinator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blocks.core.errors import InvalidArgument
from blocks.search import search_pb2
from blocks.search.api import FloatArray

__all__ = ["decode_batch", "encode_batch"]


def decode_batch(batch: Any, dim: int) -> FloatArray:
    """A ``VectorBatch`` message as a ``(rows, dim)`` float32 array."""
    if batch.dim != dim:
        raise InvalidArgument(f"vectors have dimension {batch.dim}, index has {dim}")
    if len(batch.values) != batch.rows * dim * 4:
        raise InvalidArgument(f"{len(batch.values)} bytes cannot hold {batch.rows}x{dim} float32")
    return np.frombuffer(batch.values, dtype="<f4").reshape(batch.rows, dim).astype(np.float32)


def encode_batch(vectors: FloatArray) -> Any:
    array = np.ascontiguousarray(vectors, dtype="<f4")
    return search_pb2.VectorBatch(rows=array.shape[0], dim=array.shape[1], values=array.tobytes())
