"""The wire form of vector batches and search answers, without a copy per value.

A ``VectorBatch`` carries ``(rows, dim)`` float32 vectors as one ``bytes`` field of row-major
little-endian values. A ``SearchVectorsReply`` carries its ``rows x k`` ids and distances either
as repeated fields (what any gRPC client reads) or, when the request set ``packed_reply``, as
little-endian int64 and float32 bytes (``ids_le``, ``distances_le``): building and reading the
repeated fields of a 1,000-query answer walks 20,000 Python numbers, the bytes are two copies.

Messages are filled in place (``fill_batch``): a message given to a constructor or assigned to a
field is copied again by protobuf, which for a 512 KB batch measured about 100 times slower
than setting its fields in place. Shared by the service, the client and the coordinator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blocks.core.errors import InvalidArgument
from blocks.search import search_pb2
from blocks.search.api import FloatArray, IdArray

__all__ = ["decode_batch", "decode_reply", "encode_batch", "fill_batch", "fill_reply"]


def decode_batch(batch: Any, dim: int) -> FloatArray:
    """A ``VectorBatch`` message as a ``(rows, dim)`` float32 array."""
    if batch.dim != dim:
        raise InvalidArgument(f"vectors have dimension {batch.dim}, index has {dim}")
    if len(batch.values) != batch.rows * dim * 4:
        raise InvalidArgument(f"{len(batch.values)} bytes cannot hold {batch.rows}x{dim} float32")
    return np.frombuffer(batch.values, dtype="<f4").reshape(batch.rows, dim).astype(np.float32)


def fill_batch(batch: Any, vectors: FloatArray) -> None:
    """Write ``vectors`` into the ``VectorBatch`` message ``batch`` (a field of a request)."""
    array = np.ascontiguousarray(vectors, dtype="<f4")
    batch.rows, batch.dim = array.shape
    batch.values = array.tobytes()


def encode_batch(vectors: FloatArray) -> Any:
    """A new ``VectorBatch`` (for a call whose request is the batch itself, e.g. ``Train``)."""
    batch = search_pb2.VectorBatch()
    fill_batch(batch, vectors)
    return batch


def fill_reply(reply: Any, ids: IdArray, distances: FloatArray, *, packed: bool) -> None:
    """Write a ``(rows, k)`` answer into ``reply``: bytes when ``packed``, else repeated."""
    reply.rows = ids.shape[0]
    reply.k = ids.shape[1] if ids.ndim == 2 else 0
    if packed:
        reply.ids_le = np.ascontiguousarray(ids, dtype="<i8").tobytes()
        reply.distances_le = np.ascontiguousarray(distances, dtype="<f4").tobytes()
    else:
        reply.ids.extend(ids.ravel().tolist())
        reply.distances.extend(distances.ravel().tolist())


def decode_reply(reply: Any) -> tuple[IdArray, FloatArray]:
    """A ``SearchVectorsReply``'s ``(rows, k)`` ids and distances, packed or repeated (a server
    that predates ``packed_reply`` answers with repeated fields)."""
    shape = (int(reply.rows), int(reply.k))
    cells = shape[0] * shape[1]
    if reply.ids_le or reply.distances_le:
        if len(reply.ids_le) != 8 * cells or len(reply.distances_le) != 4 * cells:
            raise InvalidArgument(f"a packed reply's bytes do not hold {shape[0]}x{shape[1]}")
        ids = np.frombuffer(reply.ids_le, dtype="<i8").astype(np.int64).reshape(shape)
        distances = np.frombuffer(reply.distances_le, dtype="<f4").astype(np.float32)
        return ids, distances.reshape(shape)
    if len(reply.ids) != cells or len(reply.distances) != cells:
        raise InvalidArgument(f"a reply's {len(reply.ids)} ids do not fill {shape[0]}x{shape[1]}")
    ids = np.array(reply.ids, dtype=np.int64).reshape(shape)
    distances = np.array(reply.distances, dtype=np.float32).reshape(shape)
    return ids, distances
