"""A minimal streaming client for the inference server's OpenAI chat endpoint.

Theory of operation. One request per connection: ``POST <path>/chat/completions`` (``path``
is the server's base URL path, ``/v1`` for ours, a router, vLLM or llama.cpp's server) with
``stream: true`` and ``stream_options.include_usage``; the server answers with a server-sent
event stream and closes the connection at its end. Each ``data:`` line is one JSON chunk: a
content delta, then a final chunk with ``usage``, then ``[DONE]``. A 429 becomes
``Overloaded`` with the server's ``retry-after-ms``; any other non-200 status is
``Unavailable`` carrying the server's error message. Lines and headers are bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from blocks.core.errors import Overloaded, PeerError, Unavailable

__all__ = ["Chunk", "stream_chat"]

LINE_BYTES_MAX = 256 * 1024
HEADERS_MAX = 64
ERROR_BODY_BYTES_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of the reply (``text``) or, last, the usage the server counted."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = (await reader.readline()).decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise PeerError(f"not an HTTP response: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for _ in range(HEADERS_MAX):
        line = (await reader.readline()).decode("latin-1").strip()
        if not line:
            return int(parts[1]), headers
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    raise PeerError("too many response headers")


def _chunk(event: dict[str, Any]) -> Chunk:
    usage = event.get("usage")
    if usage:
        return Chunk(
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
        )
    if "error" in event:
        raise Unavailable(f"generation failed: {event['error']}")
    choices = event.get("choices") or [{}]
    choice = choices[0]
    return Chunk(
        text=str((choice.get("delta") or {}).get("content") or ""),
        finish_reason=choice.get("finish_reason"),
    )


async def stream_chat(
    host: str,
    port: int,
    body: dict[str, Any],
    *,
    api_key: str = "",
    timeout_s: float = 60.0,
    path: str = "/v1",
) -> AsyncIterator[Chunk]:
    """Chunks of one streamed chat completion (see the module docstring)."""
    payload = json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}})
    data = payload.encode()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=LINE_BYTES_MAX), timeout_s
    )
    try:
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        writer.write(
            (
                f"POST {path}/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            + data
        )
        await writer.drain()
        status, headers = await asyncio.wait_for(_head(reader), timeout_s)
        if status != 200:
            text = await reader.read(ERROR_BODY_BYTES_MAX)
            if status == 429:
                raise Overloaded(
                    f"inference server busy: {text[:200]!r}",
                    retry_after_ms=int(headers.get("retry-after-ms", "1000")),
                )
            raise Unavailable(f"inference server answered {status}: {text[:200]!r}")
        while True:
            raw = await asyncio.wait_for(reader.readline(), timeout_s)
            if not raw:
                return
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                return
            try:
                yield _chunk(json.loads(line[6:]))
            except (ValueError, KeyError, TypeError, IndexError) as error:
                raise PeerError(f"malformed event from the inference server: {error}") from error
    finally:
        writer.close()
