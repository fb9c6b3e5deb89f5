"""A small HTTP/1.1 layer on asyncio streams: enough for an OpenAI-compatible API.

Theory of operation: ``parse_head`` is a pure parser for a request line and headers, with a
bound on every part (head bytes, header count, line length); anything malformed raises
``HttpError`` with the status to answer. ``read_request`` reads one request from a stream:
the head up to the blank line, then exactly ``Content-Length`` body bytes (chunked request
bodies are refused with 411, which no OpenAI client sends). Responses are either whole
(``Content-Length``) or a server-sent event stream with ``Connection: close``, which ends
when the server closes the connection, the form OpenAI's clients read.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HttpError",
    "Request",
    "RequestHead",
    "parse_head",
    "read_request",
    "start_event_stream",
    "write_event",
    "write_json",
]

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64
MAX_BODY_BYTES = 4 * 1024 * 1024
METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request the server answers with ``status`` and closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


@dataclass(frozen=True, slots=True)
class Request:
    head: RequestHead
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise HttpError(400, f"body is not valid JSON: {error}") from None


def parse_head(data: bytes) -> RequestHead:
    """Parse a request head (through the blank line; trailing bytes are an error)."""
    if len(data) > MAX_HEAD_BYTES:
        raise HttpError(431, "request head too large")
    if not data.endswith(b"\r\n\r\n"):
        raise HttpError(400, "request head must end with a blank line")
    try:
        text = data[:-4].decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if method not in METHODS:
        raise HttpError(405, f"method {method!r} not allowed")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1")
    if not target.startswith("/"):
        raise HttpError(400, "request target must be a path")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HttpError(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return RequestHead(method, target.split("?", 1)[0], version, headers)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request, or None when the peer closed the connection between requests."""
    try:
        head_bytes = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise HttpError(400, "connection closed inside the request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    head = parse_head(head_bytes)
    if "chunked" in head.headers.get("transfer-encoding", "").lower():
        raise HttpError(411, "chunked request bodies are not supported; send Content-Length")
    raw_length = head.headers.get("content-length", "0")
    if not raw_length.isdigit():
        raise HttpError(400, "bad Content-Length")
    length = int(raw_length)
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise HttpError(400, "connection closed inside the body") from None
    return Request(head, body)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def write_json(
    writer: asyncio.StreamWriter,
    status: int,
    payload: Any,
    *,
    keep_alive: bool = True,
    extra_headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Connection": "keep-alive" if keep_alive else "close",
        **(extra_headers or {}),
    }
    writer.write(_head(status, headers) + body)
    await writer.drain()


async def start_event_stream(writer: asyncio.StreamWriter) -> None:
    headers = {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "Connection": "close",
    }
    writer.write(_head(200, headers))
    await writer.drain()


async def write_event(writer: asyncio.StreamWriter, data: Any) -> None:
    """One ``data:`` event; ``data`` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data)
    writer.write(f"data: {text}\n\n".encode())
    await writer.drain()
