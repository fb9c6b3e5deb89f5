"""Storing a stream of bytes as chunks: cut, hash, encode and write, overlapped and bounded.

Theory of operation. A PUT's bytes pass through three kinds of work: the object's MD5 (its
S3 ETag, one sequential pass over every byte), each chunk's SHA-256 (its content address) and
Reed-Solomon encoding, and the shard writes. ``store_stream`` cuts the stream into chunks in
the caller's thread (``split_chunks``: one copy of each byte, into an exactly-sized chunk),
hands each chunk to a small shared pool that hashes, encodes and writes it
(``ChunkLedger.acquire``), and meanwhile feeds the same chunk to the MD5 in the caller's
thread. hashlib and file writes release the GIL, so the MD5 of one chunk overlaps the SHA-256,
encoding and writes of the previous ones; shard flushes run in the background
(``durable.Flush``) and only the commit waits for them.

Bounds: at most ``IN_FLIGHT_CHUNKS`` chunks of one stream are in the pool at once (memory:
about ``IN_FLIGHT_CHUNKS x chunk_bytes x 2.5`` with 4+2 coding), and the pool has
``CHUNK_WORKERS`` threads for all streams together. A single-chunk object skips the pool (a
thread hand-off would cost more than it saves). On any error every chunk stored so far is
released before the error propagates, so a failed PUT leaves nothing referenced.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from blocks.blob.storage.ledger import ChunkLedger
from blocks.blob.storage.meta import ChunkRef
from blocks.core.errors import InvalidArgument

__all__ = ["CHUNK_WORKERS", "IN_FLIGHT_CHUNKS", "split_chunks", "store_stream", "take_small"]

CHUNK_WORKERS = 4
IN_FLIGHT_CHUNKS = 4
_POOL = ThreadPoolExecutor(max_workers=CHUNK_WORKERS, thread_name_prefix="blob-chunk")


def split_chunks(data: bytes | Iterable[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """Cut ``data`` (bytes, or pieces of any sizes) into chunks of exactly ``chunk_bytes``
    except the last, which is shorter and never empty. Empty input yields nothing. Each byte
    is copied once (a whole ``bytes`` that fits in one chunk is not copied at all)."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        if isinstance(data, bytes) and 0 < len(view) <= chunk_bytes:
            yield data
            return
        for start in range(0, len(view), chunk_bytes):
            yield bytes(view[start : start + chunk_bytes])
        return
    held: list[memoryview] = []
    held_bytes = 0
    for piece in data:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise InvalidArgument(f"data pieces must be bytes, got {type(piece).__name__}")
        if not held and isinstance(piece, bytes) and len(piece) == chunk_bytes:
            yield piece  # a piece that is exactly a chunk needs no copy
            continue
        # A mutable piece is copied: the caller may reuse its buffer once we move on.
        view = memoryview(piece if isinstance(piece, bytes) else bytes(piece)).cast("B")
        while view:
            take = min(len(view), chunk_bytes - held_bytes)
            held.append(view[:take])
            held_bytes += take
            view = view[take:]
            if held_bytes == chunk_bytes:
                yield b"".join(held)
                held, held_bytes = [], 0
    if held:
        yield b"".join(held)


def store_stream(
    ledger: ChunkLedger,
    data: bytes | Iterable[bytes],
    chunk_bytes: int,
    size_max: int,
    check_open: Callable[[], None],
) -> tuple[list[ChunkRef], int, bytes]:
    """Chunk and store ``data``; return (pinned refs in order, size, MD5 digest). The chunks
    may still be flushing: commit only after ``ledger.make_durable(refs)``. On failure every
    reference taken so far is released."""
    md5 = hashlib.md5(usedforsecurity=False)
    refs: list[ChunkRef] = []
    in_flight: deque[Future[ChunkRef]] = deque()
    inline = isinstance(data, bytes) and len(data) <= chunk_bytes
    size = 0
    try:
        for chunk in split_chunks(data, chunk_bytes):
            size += len(chunk)
            if size > size_max:
                raise InvalidArgument(f"object larger than {size_max} bytes")
            check_open()
            if inline:
                refs.append(ledger.acquire(chunk))
            else:
                in_flight.append(_POOL.submit(ledger.acquire, chunk))
            md5.update(chunk)
            while len(in_flight) >= IN_FLIGHT_CHUNKS:
                refs.append(in_flight.popleft().result())
        while in_flight:
            refs.append(in_flight.popleft().result())
    except BaseException:
        for future in in_flight:  # let them finish so that what they stored is released
            with contextlib.suppress(BaseException):  # the first error is the one we raise
                refs.append(future.result())
        ledger.release(refs)
        raise
    return refs, size, md5.digest()


def take_small(
    data: bytes | Iterable[bytes], limit: int
) -> tuple[bytes | None, bytes | Iterable[bytes]]:
    """``(body, data)``: the whole body if it has at most ``limit`` bytes (else ``None``),
    and the data to stream otherwise, with whatever was read to find out put back first."""
    if isinstance(data, bytes | bytearray | memoryview):
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        return (bytes(data), data) if size <= limit else (None, data)
    pieces = iter(data)
    held: list[bytes] = []
    held_bytes = 0
    for piece in pieces:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise InvalidArgument(f"data pieces must be bytes, got {type(piece).__name__}")
        size = piece.nbytes if isinstance(piece, memoryview) else len(piece)
        if held_bytes + size > limit:  # too large: the piece goes on uncopied
            return None, itertools.chain(held, [piece], pieces)
        held.append(bytes(piece))
        held_bytes += size
    body = b"".join(held)
    return body, body
