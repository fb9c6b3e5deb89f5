"""A small HTTP/1.1 layer on asyncio streams: enough for an OpenAI-compatible API.

Theory of operation: ``parse_head`` is ``blocks.core.http``'s pure parser for a request line
and headers under this API's ``HEAD_RULES`` (head bytes, header count); anything malformed
raises ``HttpError`` with the status to answer. ``read_request`` reads one request from a stream:
the head up to the blank line, then exactly ``Content-Length`` body bytes (chunked request
bodies are refused with 411, which no OpenAI client sends). ``Request.json`` checks the
body's nesting depth with a linear scan *before* handing it to ``json.loads``, whose recursion
a hostile body could otherwise exhaust. Responses are either whole (``Content-Length``) or a
server-sent event stream, chunked on HTTP/1.1 so the connection stays open for the next
request, and delimited by closing the connection on HTTP/1.0.

Every refusal is an ``HttpError`` carrying the status to answer and a short ``reason`` (the
label of the server's rejection counter and the ``code`` of the OpenAI-shaped error body).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from blocks.core import http
from blocks.core.http import HeadRules, HttpError, render_head

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_JSON_DEPTH",
    "EventStream",
    "HttpError",
    "Request",
    "RequestHead",
    "json_depth",
    "parse_head",
    "read_request",
    "write_json",
]

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 64  # nested arrays/objects; an OpenAI request needs about 6
HEAD_RULES = HeadRules(
    methods=frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"}),
    head_bytes_max=MAX_HEAD_BYTES,
    headers_max=MAX_HEADERS,
    too_large_code="head_too_large",
    odd_method_status=405,  # any method not served is 405, whatever its spelling
    method_code="method_not_allowed",
    value_strip_chars=None,
)


class RequestHead(http.RequestHead):
    """A request head whose ``path`` is the target's path exactly as sent: routes match it
    and the router forwards it upstream, so it is never percent-decoded here."""

    __slots__ = ()

    @property
    def path(self) -> str:
        return self.raw_path


@dataclass(frozen=True, slots=True)
class Request:
    head: RequestHead
    body: bytes

    def json(self) -> Any:
        """The body decoded; ``HttpError`` 400 when it is not JSON or nests too deeply."""
        if json_depth(self.body) > MAX_JSON_DEPTH:
            raise HttpError(
                400, f"JSON body nests deeper than {MAX_JSON_DEPTH} levels", "json_too_deep"
            )
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise HttpError(400, f"body is not valid JSON: {error}", "invalid_json") from None


def json_depth(data: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in ``data``, ignoring brackets inside strings.

    Linear and iterative, so any input is safe; it does not validate the JSON (``json.loads``
    does that once the depth is known to be small).
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def parse_head(data: bytes) -> RequestHead:
    """Parse a request head (through the blank line; trailing bytes are an error)."""
    return http.parse_head(data, HEAD_RULES, RequestHead)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request, or None when the peer closed the connection between requests."""
    try:
        head_bytes = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise HttpError(400, "connection closed inside the request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large", "head_too_large") from None
    head = parse_head(head_bytes)
    if "chunked" in head.headers.get("transfer-encoding", "").lower():
        raise HttpError(411, "chunked request bodies are not supported; send Content-Length")
    raw_length = head.headers.get("content-length", "0")
    if not raw_length.isdigit():
        raise HttpError(400, "bad Content-Length")
    length = int(raw_length)
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"body larger than {MAX_BODY_BYTES} bytes", "body_too_large")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise HttpError(400, "connection closed inside the body") from None
    return Request(head, body)


def _head(status: int, headers: dict[str, str]) -> bytes:
    return render_head(status, headers, unknown_reason="Status")


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


class EventStream:
    """A server-sent event stream on one response.

    For an HTTP/1.1 request that keeps its connection, each event is one chunk of a chunked
    body and ``end`` writes the last chunk, so the connection can carry the next request.
    Otherwise (HTTP/1.0, or ``Connection: close``) the body ends when the server closes the
    connection, which the simplest line-reading clients expect (``keep_alive`` is then False).
    """

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        head: RequestHead,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self._writer = writer
        self._extra_headers = extra_headers or {}
        self.keep_alive = head.version == "HTTP/1.1" and head.keep_alive
        self.started = False  # the response head went out

    async def start(self) -> None:
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        headers |= self._extra_headers
        if self.keep_alive:
            headers |= {"Transfer-Encoding": "chunked", "Connection": "keep-alive"}
        else:
            headers["Connection"] = "close"
        self.started = True
        self._writer.write(_head(200, headers))
        await self._writer.drain()

    async def send(self, data: Any) -> None:
        """One ``data:`` event; ``data`` is JSON-encoded unless it is already a string."""
        text = data if isinstance(data, str) else json.dumps(data)
        self._write(f"data: {text}\n\n".encode())
        await self._writer.drain()

    async def end(self) -> None:
        if self.keep_alive:
            self._writer.write(b"0\r\n\r\n")
            await self._writer.drain()

    def _write(self, payload: bytes) -> None:
        if self.keep_alive:
            payload = b"%x\r\n%s\r\n" % (len(payload), payload)
        self._writer.write(payload)
