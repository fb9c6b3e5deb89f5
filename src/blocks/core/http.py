"""An HTTP/1.1 request-head parser and response-head renderer, with no I/O.

Theory of operation. ``parse_head`` is a pure function from the bytes of one request head
(the request line, the header lines and the blank line that ends them, nothing after it) to
a ``RequestHead``. Every bound is the caller's, given once as a ``HeadRules``: head bytes,
header count, line length, the methods served, and the status (and code) each refusal is
answered with, since the blocks that serve HTTP differ there (an S3 endpoint answers 400 to
every malformed head, as S3 does; an OpenAI-compatible one answers 431 and 505 where RFC 9110
names them). Anything malformed raises ``HttpError``, never another exception. Reading the
head off a stream, bodies, chunked coding and streaming responses stay with each block: only
the block knows how much it may buffer and how its errors are shaped.

``render_head`` is the other direction: a status line and headers, as bytes to write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote

__all__ = [
    "REASONS",
    "VERSIONS",
    "HeadRules",
    "HttpError",
    "RequestHead",
    "parse_head",
    "render_head",
]

VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1"})
REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Payload Too Large",
    416: "Range Not Satisfiable",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
"""Reason phrases by status; a status missing here gets the renderer's ``unknown_reason``."""


class HttpError(Exception):
    """A request refused at the HTTP layer: answer ``status``, then close the connection
    (after a refused head or body the stream is no longer at a request boundary).

    ``code`` is the machine-readable name of the refusal when the status alone does not say
    it (an S3 error code such as ``RequestTimeout``, an OpenAI error code such as
    ``json_too_deep``); ``reason`` is the same name for counters and error bodies, with
    ``malformed_request`` when no code was given."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    @property
    def reason(self) -> str:
        return self.code or "malformed_request"


@dataclass(frozen=True, slots=True)
class HeadRules:
    """What one server accepts in a request head, and how it answers what it does not.

    A head over ``head_bytes_max`` bytes, with more than ``headers_max`` header lines or a
    line over ``line_bytes_max`` characters (``None``: no bound of its own) is refused with
    ``too_large_status``/``too_large_code``. A method outside ``methods`` gets
    ``method_status`` when it is an uppercase token (a method this server does not serve)
    and ``odd_method_status`` otherwise; a version outside ``VERSIONS`` gets
    ``version_status``; every other defect 400. Repeated headers are joined with
    ``header_separator`` (RFC 9110 allows ``,`` with optional whitespace); values are
    stripped of ``value_strip_chars`` (``None``: of all whitespace, as ``str.strip()``)."""

    methods: frozenset[str]
    head_bytes_max: int
    headers_max: int
    line_bytes_max: int | None = None
    too_large_status: int = 431
    too_large_code: str | None = None
    method_status: int = 405
    odd_method_status: int = 400
    method_code: str | None = None
    version_status: int = 505
    header_separator: str = ", "
    value_strip_chars: str | None = " \t"

    def __post_init__(self) -> None:
        if self.head_bytes_max < 4 or self.headers_max < 0:
            raise ValueError("head_bytes_max must be at least 4 and headers_max not negative")
        if self.line_bytes_max is not None and self.line_bytes_max < 1:
            raise ValueError("line_bytes_max must be positive")
        if not self.methods:
            raise ValueError("methods must not be empty")


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request line and headers. ``headers`` keys are lowercase, repeated headers
    joined (see ``HeadRules``). ``raw_path`` and ``raw_query`` are exactly as sent, still
    percent-encoded (what SigV4 signs, and what a proxy forwards); ``path`` is decoded."""

    method: str
    raw_path: str
    raw_query: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return unquote(self.raw_path)

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after this request (HTTP/1.1 unless
        ``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``)."""
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


Head = TypeVar("Head")


def parse_head(
    data: bytes,
    rules: HeadRules,
    make: Callable[[str, str, str, str, dict[str, str]], Head] = RequestHead,  # type: ignore[assignment]
) -> Head:
    """The head in ``data`` (through CRLF CRLF; a byte after it is an error), built by
    ``make(method, raw_path, raw_query, version, headers)``; ``HttpError`` if malformed or
    past a bound of ``rules``."""
    if len(data) > rules.head_bytes_max:
        raise HttpError(rules.too_large_status, "request head too large", rules.too_large_code)
    if not data.endswith(b"\r\n\r\n"):
        raise HttpError(400, "request head must end with a blank line")
    lines = data[:-4].decode("latin-1").split("\r\n")  # latin-1 decodes every byte
    if rules.line_bytes_max is not None and max(map(len, lines)) > rules.line_bytes_max:
        raise HttpError(rules.too_large_status, "request line too long", rules.too_large_code)
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if method not in rules.methods:
        status = rules.method_status if method.isalpha() and method.isupper() else 0
        status = status or rules.odd_method_status
        raise HttpError(status, f"method {method[:20]!r} not allowed", rules.method_code)
    if version not in VERSIONS:
        raise HttpError(rules.version_status, "only HTTP/1.0 and HTTP/1.1")
    if not target.startswith("/"):
        raise HttpError(400, "request target must be a path")
    if len(lines) - 1 > rules.headers_max:
        raise HttpError(rules.too_large_status, "too many headers", rules.too_large_code)
    headers: dict[str, str] = {}
    separator, strip_chars = rules.header_separator, rules.value_strip_chars
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or " " in name or "\t" in name or name != name.strip():
            raise HttpError(400, f"malformed header line {line[:40]!r}")
        key = name.lower()
        value = value.strip(strip_chars)
        headers[key] = f"{headers[key]}{separator}{value}" if key in headers else value
    raw_path, _, raw_query = target.partition("?")
    return make(method, raw_path, raw_query, version, headers)


def render_head(status: int, headers: Mapping[str, str], unknown_reason: str = "Unknown") -> bytes:
    """``HTTP/1.1 status reason``, one line a header, and the blank line, as bytes."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, unknown_reason)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
