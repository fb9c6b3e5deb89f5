"""A small HTTP/1.1 server core: parse a request head, read a body, write a response.

Theory of operation. ``parse_head`` is ``blocks.core.http``'s pure head parser under S3's
``HEAD_RULES``: the bytes of a request head (up to and including the blank line) to a
``RequestHead``; anything malformed raises ``HttpError(400)`` (405 for an uppercase method
not served), nothing else. The asyncio side (``read_request``) reads the head with a
size limit, answers ``Expect: 100-continue`` once the caller has accepted the head (boto3
waits for it before sending a body), and reads the body by ``Content-Length`` or by
``Transfer-Encoding: chunked``, never more than ``body_bytes_max`` bytes. ``RequestBody``
offers the body whole or, for ``Content-Length`` bodies, piece by piece (a large PUT is
stored while it arrives instead of being held in memory). A response carries its body
whole or as ``pieces`` that the server writes as they are produced (a large GET is sent
chunk by chunk); connections are kept alive unless the client asks to close them.

Every body read is bounded in time as well as size: each read of ``n`` bytes must finish
within ``read_timeout_s`` per started MiB (a floor on the rate, which also cuts a client that
goes idle); past it the read raises ``HttpError(400, code="RequestTimeout")``.

Supported: HTTP/1.0 and 1.1, keep-alive, chunked request bodies (with trailers, which are
dropped), ``Expect: 100-continue``. Not supported: pipelining beyond one request at a time
(requests are answered in order, which is all HTTP/1.1 asks), upgrades, chunked responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field

from blocks.blob.s3.directread import read_exactly_direct
from blocks.core import http
from blocks.core.http import HeadRules, HttpError, RequestHead, render_head

__all__ = [
    "BODY_READ_TIMEOUT_S",
    "HEAD_BYTES_MAX",
    "HttpError",
    "RequestBody",
    "RequestHead",
    "Response",
    "parse_head",
    "read_body",
    "read_head",
    "render_response",
]

HEAD_BYTES_MAX = 64 * 1024
BODY_READ_TIMEOUT_S = 30.0
"""Default time a body has to deliver each MiB (or the rest of a shorter read)."""
BODY_TIMEOUT_UNIT_BYTES = 1024 * 1024
HEADERS_MAX = 200
HEAD_RULES = HeadRules(
    methods=frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"}),
    head_bytes_max=HEAD_BYTES_MAX,
    headers_max=HEADERS_MAX,
    too_large_status=400,  # S3 answers every malformed head 400 Bad Request
    version_status=400,
    header_separator=",",
)


async def _timed(awaitable: Awaitable[bytes], size: int, read_timeout_s: float) -> bytes:
    """``awaitable`` (a read of ``size`` bytes), cut after ``read_timeout_s`` per started MiB.

    ``asyncio.timeout`` arms one timer on the current task; ``asyncio.wait_for`` (before
    Python 3.12) wraps every read in a task of its own, a cost paid on every request."""
    units = max(1, -(-size // BODY_TIMEOUT_UNIT_BYTES))
    try:
        async with asyncio.timeout(read_timeout_s * units):
            return await awaitable
    except TimeoutError as error:
        raise HttpError(
            400, "the body did not arrive within the read timeout", "RequestTimeout"
        ) from error


def parse_head(data: bytes) -> RequestHead:
    """Parse a request head ending in CRLF CRLF; ``HttpError`` (400, or 405 for a method
    this server does not serve) if malformed."""
    return http.parse_head(data, HEAD_RULES)


async def read_head(reader: asyncio.StreamReader) -> RequestHead | None:
    """The next request head, or ``None`` when the client closed the connection cleanly."""
    try:
        data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial.strip():
            return None
        raise HttpError(400, "connection closed inside a request head") from error
    except asyncio.LimitOverrunError as error:
        raise HttpError(400, "request head too large") from error
    return parse_head(data)


async def read_body(
    reader: asyncio.StreamReader,
    head: RequestHead,
    body_bytes_max: int,
    read_timeout_s: float = BODY_READ_TIMEOUT_S,
) -> bytes:
    """The request body (de-chunked), at most ``body_bytes_max`` bytes, each read bounded
    in time (see the module docstring)."""
    encoding = head.headers.get("transfer-encoding", "").lower()
    if encoding:
        if encoding != "chunked":
            raise HttpError(501, f"unsupported transfer-encoding {encoding!r}")
        return await _read_chunked(reader, body_bytes_max, read_timeout_s)
    length_text = head.headers.get("content-length", "0")
    if not length_text.isdigit():
        raise HttpError(400, "bad content-length")
    length = int(length_text)
    if length > body_bytes_max:
        raise HttpError(413, f"body larger than {body_bytes_max} bytes")
    if not length:
        return b""  # a GET, a HEAD, most DELETEs: nothing to wait for
    try:
        return await _timed(reader.readexactly(length), length, read_timeout_s)
    except asyncio.IncompleteReadError as error:
        raise HttpError(400, "connection closed inside the body") from error


async def _read_chunked(
    reader: asyncio.StreamReader, body_bytes_max: int, read_timeout_s: float
) -> bytes:
    pieces: list[bytes] = []
    total = 0
    try:
        while True:
            line = await _timed(reader.readuntil(b"\r\n"), 0, read_timeout_s)
            size_text = line[:-2].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as error:
                raise HttpError(400, "bad chunk size") from error
            if size == 0:
                break
            total += size
            if size < 0 or total > body_bytes_max:
                raise HttpError(413, f"body larger than {body_bytes_max} bytes")
            pieces.append(await _timed(reader.readexactly(size), size, read_timeout_s))
            if await _timed(reader.readexactly(2), 2, read_timeout_s) != b"\r\n":
                raise HttpError(400, "chunk not followed by CRLF")
        for _ in range(HEADERS_MAX):  # trailer section, ended by an empty line
            if await _timed(reader.readuntil(b"\r\n"), 0, read_timeout_s) == b"\r\n":
                return b"".join(pieces)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
        raise HttpError(400, "malformed chunked body") from error
    raise HttpError(400, "too many trailer lines")


class RequestBody:
    """One request's body, read at most once: whole (``read_all``) or, when it has a
    ``Content-Length``, piece by piece (``read_piece``). ``consumed`` tells the server
    whether the connection is positioned at the next request."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        head: RequestHead,
        read_timeout_s: float = BODY_READ_TIMEOUT_S,
    ) -> None:
        self._reader = reader
        self._head = head
        self.read_timeout_s = read_timeout_s
        encoding = head.headers.get("transfer-encoding", "")
        length_text = head.headers.get("content-length", "0")
        self.length: int | None = None
        """The body's size when known up front (``Content-Length``), else ``None``."""
        if not encoding and length_text.isdigit():
            self.length = int(length_text)
        self._remaining = self.length or 0
        self.started = False
        self.consumed = self.length == 0

    async def read_all(self, body_bytes_max: int) -> bytes:
        """The whole body (de-chunked), at most ``body_bytes_max`` bytes."""
        if self.started:
            raise HttpError(500, "the body was already read")
        self.started = True
        data = await read_body(self._reader, self._head, body_bytes_max, self.read_timeout_s)
        self.consumed = True
        return data

    async def read_piece(self, size: int) -> bytes:
        """The next ``size`` bytes of a ``Content-Length`` body (fewer at its end), or
        ``b""`` once it is all read."""
        if self.length is None:
            raise HttpError(500, "only Content-Length bodies are read piece by piece")
        self.started = True
        if not self._remaining:
            return b""
        try:
            wanted = min(size, self._remaining)
            read = read_exactly_direct(self._reader, wanted)  # large: one copy, not four
            piece = await _timed(read, wanted, self.read_timeout_s)
        except asyncio.IncompleteReadError as error:
            raise HttpError(400, "connection closed inside the body") from error
        self._remaining -= len(piece)
        self.consumed = not self._remaining
        return piece


@dataclass(slots=True)
class Response:
    """A response. The body is ``body``, or ``pieces`` (a blocking iterator the server pulls
    in a worker thread and closes when done) of ``content_length`` bytes in all. For HEAD the
    body is omitted but Content-Length still describes it."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_length: int | None = None
    pieces: Iterator[bytes | memoryview] | None = None


def render_response(response: Response, *, head_only: bool, keep_alive: bool) -> list[bytes]:
    """The bytes to write for ``response``: status line and headers, then the body."""
    length = response.content_length if response.content_length is not None else len(response.body)
    headers = dict(response.headers)
    if response.status not in (100, 204, 304) and not (head_only and response.status >= 300):
        headers.setdefault("Content-Length", str(length))
    elif head_only and response.status != 304:
        headers.setdefault("Content-Length", "0")
    headers["Connection"] = "keep-alive" if keep_alive else "close"
    head = render_head(response.status, headers)
    if head_only or not response.body:
        return [head]
    return [head, response.body]
