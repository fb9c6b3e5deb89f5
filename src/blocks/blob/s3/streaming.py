"""Bodies that flow while they are stored or read: streamed PUT payloads and GET bodies.

Theory of operation. ``StreamedPayload`` turns a plain (``Content-Length``) request body into
an iterable that the store's worker thread consumes while the bytes arrive: each step asks the
event loop for the next piece (one piece ahead, so the network read overlaps the hashing and
storing of the previous piece) and feeds the signed ``x-amz-content-sha256`` and any
checksum headers (``awschunked.PayloadChecks``). The checks run after the last byte, *inside
the consumer*: a mismatch raises ``S3RequestError`` there, so the store drops what it wrote and
commits nothing. ``streamable`` decides which requests take this path (large plain PUT and
UploadPart bodies; aws-chunked and ``Transfer-Encoding: chunked`` bodies are read whole).

``ObjectBody`` wraps a GET's pieces with the first one read ahead, so that a missing or
unreadable first chunk still becomes a proper S3 error instead of a cut connection.
``decode_payload`` is the whole-body path: aws-chunked decoding and the signed SHA-256 check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import re
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

from blocks.blob.s3.awschunked import PayloadChecks, S3RequestError, decode_aws_chunked
from blocks.blob.s3.http import RequestBody, RequestHead
from blocks.blob.s3.sigv4 import SigningContext

__all__ = [
    "STREAM_BODY_BYTES_MIN",
    "STREAM_PIECE_BYTES",
    "ObjectBody",
    "StreamedPayload",
    "decode_payload",
    "streamable",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
STREAM_BODY_BYTES_MIN = 1024 * 1024
"""Plain PUT bodies from this size on are streamed into the store; smaller ones are read
whole (a thread hand-off per piece would cost more than holding them)."""

STREAM_PIECE_BYTES = 4 * 1024 * 1024
STREAM_WAIT_MARGIN_S = 30.0


class StreamedPayload:
    """A plain (``Content-Length``) request body consumed by a worker thread while it
    arrives. The thread asks the event loop for pieces one ahead (the next piece arrives
    while this one is hashed and stored; pieces of the store's chunk size need no copying
    into chunks), hashes each for the signed ``x-amz-content-sha256`` and any checksums,
    and yields it. After the last piece the hashes are checked; a mismatch raises
    ``S3RequestError`` *inside the consumer*, so the store drops what it wrote and commits
    nothing. Iterate once."""

    def __init__(
        self,
        read_piece: Callable[[int], Coroutine[Any, Any, bytes]],
        loop: asyncio.AbstractEventLoop,
        headers: Mapping[str, str],
        expected_sha256: str | None,
        piece_bytes: int = STREAM_PIECE_BYTES,
        read_timeout_s: float = 30.0,
    ) -> None:
        self._read_piece = read_piece
        # The event loop cuts a slow body (``http``); this thread-side bound only guards
        # against a loop that never answers.
        self._wait_s = read_timeout_s * (1 + piece_bytes // (1024 * 1024)) + STREAM_WAIT_MARGIN_S
        self._loop = loop
        self._checks = PayloadChecks(headers)
        self._expected_sha256 = expected_sha256
        self._piece_bytes = piece_bytes
        self.echoed: dict[str, str] = {}
        """The checksums to echo back (set once the whole body has been verified)."""

    def _request(self) -> concurrent.futures.Future[bytes]:
        return asyncio.run_coroutine_threadsafe(self._read_piece(self._piece_bytes), self._loop)

    def __iter__(self) -> Iterator[bytes]:
        sha256 = hashlib.sha256() if self._expected_sha256 is not None else None
        pending = self._request()
        try:
            while True:
                piece = pending.result(timeout=self._wait_s)
                if not piece:
                    break
                pending = self._request()
                if sha256 is not None:
                    sha256.update(piece)
                self._checks.update(piece)
                yield piece
        finally:
            # Never leave a read running behind us: the connection is unusable after it.
            if not pending.done():
                pending.cancel()
        if sha256 is not None and sha256.hexdigest() != self._expected_sha256:
            raise S3RequestError(
                "XAmzContentSHA256Mismatch", "the body does not match x-amz-content-sha256"
            )
        self.echoed = self._checks.finish()


class ObjectBody(Iterator[bytes | memoryview]):
    """An object's pieces with the first one read ahead (``prefetch``, in a worker thread)."""

    def __init__(self, pieces: Iterator[bytes | memoryview]) -> None:
        self._pieces = pieces
        self._first: bytes | memoryview | None = None

    def prefetch(self) -> None:
        self._first = next(self._pieces, None)

    def whole(self, length: int, limit: int) -> bytes | None:
        """The entire body as bytes (and the pieces closed) if the prefetched piece is all
        ``length`` bytes of it and no more than ``limit``; else ``None``, nothing changed."""
        first = self._first
        if length == 0:
            self.close()
            return b""
        if first is None or len(first) != length or length > limit:
            return None
        self.close()
        return bytes(first)

    def __next__(self) -> bytes | memoryview:
        if self._first is not None:
            piece, self._first = self._first, None
            return piece
        return next(self._pieces)

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


def streamable(head: RequestHead, body: RequestBody) -> bool:
    """A plain PutObject or UploadPart body large enough to stream into the store."""
    headers = head.headers
    return (
        head.method == "PUT"
        and body.length is not None
        and body.length >= STREAM_BODY_BYTES_MIN
        and "/" in head.path.lstrip("/")
        and "x-amz-copy-source" not in headers
        and not headers.get("x-amz-content-sha256", "").startswith("STREAMING-")
        and "aws-chunked" not in headers.get("content-encoding", "").lower()
    )


def decode_payload(
    head: RequestHead, body: bytes, context: SigningContext | None
) -> tuple[bytes, dict[str, str]]:
    """The payload and the header or trailer values its checksums are checked against."""
    headers = head.headers
    payload_hash = headers.get("x-amz-content-sha256", "")
    encodings = [e.strip() for e in headers.get("content-encoding", "").lower().split(",")]
    checks = dict(headers)
    if payload_hash.startswith("STREAMING-") or "aws-chunked" in encodings:
        decoded = decode_aws_chunked(body, context)
        declared = headers.get("x-amz-decoded-content-length")
        if declared is not None and declared != str(len(decoded.payload)):
            raise S3RequestError("IncompleteBody", "x-amz-decoded-content-length differs")
        announced = headers.get("x-amz-trailer", "").lower()
        if announced and announced not in decoded.trailers:
            raise S3RequestError("IncompleteBody", f"the announced trailer {announced} is missing")
        checks.update(decoded.trailers)
        return decoded.payload, checks
    if _HEX64.match(payload_hash) and hashlib.sha256(body).hexdigest() != payload_hash:
        raise S3RequestError(
            "XAmzContentSHA256Mismatch", "the body does not match x-amz-content-sha256"
        )
    return body, checks
