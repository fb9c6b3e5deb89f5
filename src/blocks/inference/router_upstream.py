"""The router's side of a backend: HTTP/1.1 requests over a small keep-alive pool.

Theory of operation: each backend (an OpenAI-compatible server given by URL) has a pool of
idle connections, at most ``max_idle`` kept. ``Upstream.send`` writes one request on a pooled
connection (or a new one) and reads the response head; the body is then read by the caller
through ``Response.body_chunks`` (``Content-Length``, chunked, or until the server closes).
A connection goes back to the pool only when its response was read to the end and neither
side asked to close; anything else closes it.

Failures are classified for the router's retry rule: ``BackendUnreachable`` means nothing
of a response arrived (refused, reset or closed before the status line, or no head within
``head_timeout_s``), so the request can be sent elsewhere; an error while reading the body
is ``BackendCut``. A pooled connection the backend closed while idle fails the same way, so
``send`` retries once on a fresh connection before reporting the backend unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import urlsplit

from blocks.core.errors import InvalidArgument

__all__ = [
    "BackendCut",
    "BackendUnreachable",
    "Response",
    "Upstream",
    "parse_backend_url",
    "sse_data",
]

MAX_RESPONSE_HEAD_BYTES = 16 * 1024
MAX_RESPONSE_HEADERS = 64
MAX_CHUNK_LINE_BYTES = 64 * 1024
READ_BYTES = 64 * 1024


class BackendUnreachable(Exception):
    """No byte of a response came back: safe to send the request to another replica."""


class BackendCut(Exception):
    """The response started but its body broke off."""


def parse_backend_url(url: str) -> tuple[str, int, str]:
    """``http://HOST:PORT[/prefix][/v1]`` as (host, port, path prefix without ``/v1``)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise InvalidArgument(f"backend URL must be http://HOST:PORT, got {url!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise InvalidArgument(f"bad port in backend URL {url!r}") from None
    prefix = parts.path.rstrip("/")
    prefix = prefix.removesuffix("/v1")
    return parts.hostname, port, prefix


def parse_response_head(data: bytes) -> tuple[int, dict[str, str]]:
    """Status and lower-cased headers of a response head (through its blank line)."""
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise BackendUnreachable(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BackendUnreachable("malformed response header")
        headers[name.strip().lower()] = value.strip()
    if len(headers) > MAX_RESPONSE_HEADERS:
        raise BackendUnreachable("too many response headers")
    return int(parts[1]), headers


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


class Response:
    """One response: ``status``, ``headers``, then the body once via ``body_chunks``."""

    def __init__(
        self, upstream: Upstream, conn: _Connection, status: int, headers: dict[str, str]
    ) -> None:
        self.status = status
        self.headers = headers
        self._upstream = upstream
        self._conn: _Connection | None = conn

    async def body_chunks(self, idle_timeout_s: float) -> AsyncGenerator[bytes, None]:
        """The body's bytes as they come; ``BackendCut`` if it breaks off or stalls."""
        conn = self._conn
        assert conn is not None, "body read twice"
        reader = conn.reader
        reusable = self.headers.get("connection", "").lower() != "close"
        finished = False  # read to the end: only then may the connection carry another request
        try:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                while True:
                    line = await asyncio.wait_for(reader.readuntil(b"\r\n"), idle_timeout_s)
                    size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                    if size == 0:
                        while (await asyncio.wait_for(reader.readline(), idle_timeout_s)) not in (
                            b"\r\n",
                            b"",
                        ):
                            pass
                        break
                    data = await asyncio.wait_for(reader.readexactly(size + 2), idle_timeout_s)
                    yield data[:-2]
                finished = True
            elif "content-length" in self.headers:
                left = int(self.headers["content-length"])
                while left > 0:
                    data = await asyncio.wait_for(
                        reader.read(min(left, READ_BYTES)), idle_timeout_s
                    )
                    if not data:
                        raise BackendCut("backend closed inside the body")
                    left -= len(data)
                    yield data
                finished = True
            else:  # delimited by the server closing the connection
                reusable = False
                while data := await asyncio.wait_for(reader.read(READ_BYTES), idle_timeout_s):
                    yield data
                finished = True
        except (
            TimeoutError,
            OSError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as error:
            raise BackendCut(f"backend response broke off: {error!r}") from None
        finally:
            self._conn = None
            if reusable and finished:
                self._upstream.release(conn)
            else:
                conn.close()

    def discard(self) -> None:
        """Drop an unread body (its connection closes)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Upstream:
    """One backend server: where it is and its idle connections."""

    def __init__(self, url: str, *, max_idle: int = 32, connect_timeout_s: float = 5.0) -> None:
        self.url = url
        self.host, self.port, self.prefix = parse_backend_url(url)
        self.max_idle = max_idle
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []

    async def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes, head_timeout_s: float
    ) -> Response:
        """Write the request and read the response head (see the module docstring)."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        while self._idle:  # a pooled connection may have been closed by the backend
            conn = self._idle.pop()
            try:
                return await self._exchange(conn, data, head_timeout_s)
            except BackendUnreachable:
                continue
        return await self._exchange(await self._connect(), data, head_timeout_s)

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_RESPONSE_HEAD_BYTES),
                self.connect_timeout_s,
            )
        except (OSError, TimeoutError) as error:
            raise BackendUnreachable(f"cannot connect to {self.url}: {error!r}") from None
        return _Connection(reader, writer)

    async def _exchange(self, conn: _Connection, data: bytes, head_timeout_s: float) -> Response:
        try:
            conn.writer.write(data)
            await conn.writer.drain()
            head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), head_timeout_s)
            status, headers = parse_response_head(head)
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            BackendUnreachable,
        ) as error:
            conn.close()
            raise BackendUnreachable(f"{self.url} gave no response: {error!r}") from None
        return Response(self, conn, status, headers)

    def release(self, conn: _Connection) -> None:
        if len(self._idle) < self.max_idle and not conn.writer.is_closing():
            self._idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()


def sse_data(pending: bytes) -> tuple[list[str], bytes]:
    """The ``data:`` payloads of the whole events in ``pending``, and the unfinished rest.

    Lines may end in LF or CRLF (a CRLF split across two reads stays in the rest until its
    LF comes); comment lines and other fields are dropped.
    """
    pending = pending.replace(b"\r\n", b"\n")
    texts: list[str] = []
    while b"\n\n" in pending:
        event, pending = pending.split(b"\n\n", 1)
        for line in event.decode("utf-8", "replace").split("\n"):
            if line.startswith("data:"):
                texts.append(line[5:].strip())
    return texts, pending
