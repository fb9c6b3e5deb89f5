"""An OpenAI-compatible router in front of inference replicas (ours, vLLM, llama.cpp's server).

Theory of operation: the front end is the inference server's own HTTP layer (a
``connection.RequestReader`` per connection, the request loop of ``connection_loop``,
``ServerLimits``, ``http``'s bounded parser and OpenAI-shaped errors). For each completion request the driver asks the pure
``RouterPolicy`` for a replica (prefix affinity, else fewest outstanding tokens), sends the
request there over a keep-alive ``Upstream`` pool, and relays the answer:

* whole answers are read to the end, then written with the backend's status;
* streamed answers are re-framed event by event (each upstream ``data:`` line becomes one
  event of our own stream), so a stream that breaks off upstream ends here with an
  OpenAI-shaped ``{"error": ...}`` event and a proper end, never a hang (a stalled backend
  is cut after ``RouterTimeouts.idle_s``).

Retries: while no byte of the answer has gone to the client, a replica that refuses, resets
or does not answer is taken out (``handle_request_failure``) and the request goes to another,
at most ``max_attempts`` times. ``/v1/embeddings`` goes the same way (its ``input`` is the
affinity key, so the same texts meet a replica's warm prefix cache); ``/v1/models`` is the
union over the healthy replicas.
A background loop checks each replica's ``/health`` (falling back to ``/v1/models``, which
every OpenAI-compatible server has) every ``check_interval_s`` and brings it back in.

Drain: ``stop`` closes the listener, closes idle connections, lets in-flight requests finish
(at most ``drain_timeout_s``), then closes the rest. ``Authorization`` is passed through:
the backends check keys. Every answer names its replica in ``x-blocks-replica``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blocks.core.errors import InvalidArgument, Unavailable
from blocks.inference import openai_api as oa
from blocks.inference.connection import RequestReader, ServerLimits
from blocks.inference.connection_loop import ConnectionHooks, refuse_connection, serve_requests
from blocks.inference.http import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    EventStream,
    HttpError,
    Request,
    write_json,
)
from blocks.inference.router_metrics import exposition, router_registry
from blocks.inference.router_policy import RouterConfig, RouterPolicy, prompt_prefix
from blocks.inference.router_upstream import (
    BackendCut,
    BackendUnreachable,
    Response,
    Upstream,
    sse_data,
)

__all__ = ["Router", "RouterTimeouts"]

log = logging.getLogger(__name__)

COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")
# Forwarded to one replica each, with the same choice, retries and relaying as completions.
FORWARDED_PATHS = (*COMPLETION_PATHS, "/v1/embeddings")
PASSED_HEADERS = ("authorization", "content-type", "accept", "openai-organization")
REPLICA_HEADER = "x-blocks-replica"  # which replica answered (for clients and tests)
RELAYED_HEADERS = ("retry-after", "retry-after-ms", "x-request-id")


@dataclass(frozen=True, slots=True)
class RouterTimeouts:
    """``head_s``: for a backend's response head (a whole answer comes after generation).
    ``idle_s``: between two pieces of a body. ``check_s``: one health check.
    ``check_interval_s``: between rounds of checks. ``drain_s``: in-flight work on stop."""

    head_s: float = 300.0
    idle_s: float = 120.0
    check_s: float = 5.0  # generous: a busy engine answers /health late, not never
    check_interval_s: float = 1.0
    drain_s: float = 30.0

    def __post_init__(self) -> None:
        if min(self.head_s, self.idle_s, self.check_s, self.check_interval_s, self.drain_s) <= 0:
            raise InvalidArgument("router timeouts must be positive")


class Router:
    def __init__(
        self,
        backends: Sequence[str],
        *,
        config: RouterConfig | None = None,
        timeouts: RouterTimeouts | None = None,
        limits: ServerLimits | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_attempts: int = 3,
    ) -> None:
        if not backends:
            raise InvalidArgument("the router needs at least one --backend URL")
        self.upstreams = {url: Upstream(url) for url in dict.fromkeys(backends)}
        self.policy = RouterPolicy.of(self.upstreams, config)
        self.timeouts = timeouts or RouterTimeouts()
        self.limits = limits or ServerLimits()
        self.host = host
        self.port = port
        self.max_attempts = max(1, max_attempts)
        self.counts = {"requests": 0, "retries": 0, "cut_streams": 0, "unavailable": 0}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._busy: set[asyncio.Task[Any]] = set()
        self._draining = False
        self._idle_now = asyncio.Event()
        self._checker: asyncio.Task[None] | None = None
        self.registry = router_registry(self.stats)  # Prometheus, read from stats()

    async def start(self) -> int:
        """Listen and start health checks; returns the bound port."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._checker = asyncio.create_task(self._check_forever(), name="router-health")
        return self.port

    async def stop(self) -> None:
        """Drain: stop accepting, finish in-flight requests (bounded), close everything."""
        self._draining = True
        if self._server is not None:
            self._server.close()
        for task in list(self._connections - self._busy):
            task.cancel()
        if self._busy:
            self._idle_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle_now.wait(), self.timeouts.drain_s)
        for task in list(self._connections):
            task.cancel()
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None
        for upstream in self.upstreams.values():
            await upstream.close()

    def stats(self) -> dict[str, Any]:
        """Counters and each replica's state (``GET /router/stats``)."""
        replicas = {
            name: {
                "health": r.health.value,
                "outstanding_tokens": r.outstanding_tokens,
                "in_flight": r.in_flight,
                "requests": r.requests,
            }
            for name, r in self.policy.replicas.items()
        }
        return {**self.counts, "reasons": dict(self.policy.reasons), "replicas": replicas}

    # ------------------------------------------------------------------ health

    async def _check_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._check(url) for url in self.upstreams))
            await asyncio.sleep(self.timeouts.check_interval_s)

    async def _check(self, url: str) -> None:
        upstream = self.upstreams[url]
        ok = False
        for path in ("/health", "/v1/models"):
            try:
                response = await upstream.send("GET", path, {}, b"", self.timeouts.check_s)
                async for _ in response.body_chunks(self.timeouts.check_s):
                    pass
            except (BackendUnreachable, BackendCut):
                break
            if response.status == 200:
                ok = True
                break
            if response.status != 404:
                break
        self.policy.handle_health(url, ok)

    # ------------------------------------------------------------------ connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.limits.max_connections or self._draining:
            body = oa.error_body("router busy; retry later", "server_error", code="unavailable")
            await refuse_connection(writer, body)
            return
        self._connections.add(task)
        hooks = ConnectionHooks(time.monotonic, log, "router", serving=self._taking_requests)
        await serve_requests(
            self._connections, reader, writer, self._busy_handle, self.limits, hooks
        )

    def _taking_requests(self) -> bool:
        return not self._draining

    async def _busy_handle(
        self, request: Request, requests: RequestReader, writer: asyncio.StreamWriter
    ) -> bool:
        """``_handle``, with the connection counted busy meanwhile (a drain waits for it)."""
        task = asyncio.current_task()
        assert task is not None
        self._busy.add(task)
        try:
            return await self._handle(request, requests, writer)
        finally:
            self._busy.discard(task)
            if self._draining and not self._busy:
                self._idle_now.set()

    async def _handle(
        self, request: Request, requests: RequestReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        head = request.head
        try:
            if head.path == "/health" and head.method == "GET":
                up = self.policy.up()
                status = 200 if up else 503
                await write_json(writer, status, {"status": "ok" if up else "down", "up": up})
                return True
            if head.path == "/router/stats" and head.method == "GET":
                await write_json(writer, 200, self.stats())
                return True
            if head.path == "/metrics" and head.method == "GET":
                text = exposition(self.registry)
                await write_json(writer, 200, text, content_type="text/plain; version=0.0.4")
                return True
            if head.path == "/v1/models" and head.method == "GET":
                return await self._models(request, writer)
            if head.path in FORWARDED_PATHS:
                if head.method != "POST":
                    raise oa.ApiError(405, "use POST")
                work = asyncio.create_task(self._forward(request, writer))
                watcher = asyncio.create_task(requests.gone.wait())
                try:
                    await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    watcher.cancel()
                    if not work.done():  # the client hung up: stop relaying (closes upstream)
                        work.cancel()
                    with contextlib.suppress(BaseException):
                        await work
                return not work.cancelled() and work.exception() is None and work.result()
            raise oa.ApiError(404, f"no route for {head.method} {head.path}", code="not_found")
        except oa.ApiError as error:
            await write_json(writer, error.status, error.body())
            return True
        except HttpError as error:
            await write_json(writer, error.status, oa.http_error_body(error))
            return True

    async def _models(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        headers = _passed(request)
        seen: dict[str, Any] = {}
        last_status, last_body = 503, b""
        for url in self.policy.up():
            try:
                response = await self.upstreams[url].send(
                    "GET", "/v1/models", headers, b"", self.timeouts.check_s
                )
                body = await _read_all(response, self.timeouts.idle_s)
            except (BackendUnreachable, BackendCut):
                continue
            last_status, last_body = response.status, body
            if response.status != 200:
                continue
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                for model in json.loads(body).get("data", []):
                    seen.setdefault(model.get("id"), model)
        if seen:
            await write_json(writer, 200, {"object": "list", "data": list(seen.values())})
        elif last_body:  # every replica refused (a bad key, say): its answer, as it was
            await write_json(writer, last_status, last_body)
        else:
            await write_json(writer, 503, _unavailable("no healthy replica"))
        return True

    # ------------------------------------------------------------------ forwarding

    async def _forward(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Send to a replica, retrying elsewhere until a byte reaches the client."""
        body = request.json()
        if len(request.body) > MAX_BODY_BYTES:  # pragma: no cover - the reader refuses first
            raise HttpError(413, "body too large", "body_too_large")
        prefix, cost = prompt_prefix(body)
        stream = isinstance(body, dict) and body.get("stream") is True
        self.counts["requests"] += 1
        tried: list[str] = []
        last_error = "no healthy replica"
        for attempt in range(self.max_attempts):
            try:
                url = self.policy.choose(prefix, exclude=tried).replica
            except Unavailable:
                break
            if attempt:
                self.counts["retries"] += 1
            tried.append(url)
            self.policy.start(url, cost)
            try:
                response = await self.upstreams[url].send(
                    "POST", request.head.path, _passed(request), request.body, self.timeouts.head_s
                )
                if stream and response.status == 200:
                    return await self._relay_stream(request, response, writer, url)
                answer = await _read_all(response, self.timeouts.idle_s)
            except (BackendUnreachable, BackendCut) as error:
                self.policy.handle_request_failure(url)
                last_error = str(error)
                log.warning("replica %s failed, trying another: %s", url, error)
                continue
            finally:
                self.policy.finish(url, cost)
            extra = {k: v for k, v in response.headers.items() if k in RELAYED_HEADERS}
            extra[REPLICA_HEADER] = url
            content_type = response.headers.get("content-type", "application/json")
            await write_json(
                writer, response.status, answer, extra_headers=extra, content_type=content_type
            )
            return True
        self.counts["unavailable"] += 1
        await write_json(writer, 503, _unavailable(f"no replica answered: {last_error}"))
        return True

    async def _relay_stream(
        self, request: Request, response: Response, writer: asyncio.StreamWriter, url: str
    ) -> bool:
        """Re-frame the upstream events; the client's head goes out with the first event, so
        a replica that fails before any event still counts as not started (``BackendCut``)."""
        events = EventStream(writer, request.head, {REPLICA_HEADER: url})
        pending = b""
        done = False  # saw ``[DONE]``: an end without it is a cut
        try:
            async with contextlib.aclosing(response.body_chunks(self.timeouts.idle_s)) as chunks:
                async for data in chunks:
                    texts, pending = sse_data(pending + data)
                    for text in texts:
                        if not events.started:
                            await events.start()
                        done = done or text == "[DONE]"
                        await events.send(text)
                    if len(pending) > MAX_BODY_BYTES:
                        raise BackendCut("an event larger than the body limit")
            if not done:
                raise BackendCut("the stream ended without [DONE]")
        except BackendCut as error:
            if not events.started:
                raise
            self.counts["cut_streams"] += 1
            log.warning("stream from a replica broke off: %s", error)
            body = oa.error_body(
                "the replica serving this stream failed mid-way; retry the request",
                "server_error",
                code="upstream_disconnected",
            )
            await events.send(body)
            await events.end()
            return events.keep_alive
        await events.end()
        return events.keep_alive


def _passed(request: Request) -> dict[str, str]:
    headers = {k: v for k, v in request.head.headers.items() if k in PASSED_HEADERS}
    headers.setdefault("content-type", "application/json")
    return headers


async def _read_all(response: Response, idle_timeout_s: float) -> bytes:
    parts: list[bytes] = []
    size = 0
    async with contextlib.aclosing(response.body_chunks(idle_timeout_s)) as chunks:
        async for data in chunks:
            size += len(data)
            if size > MAX_BODY_BYTES:
                raise BackendCut(f"backend answer larger than {MAX_BODY_BYTES} bytes")
            parts.append(data)
    return b"".join(parts)


def _unavailable(message: str) -> dict[str, Any]:
    return oa.error_body(message, "server_error", code="no_healthy_replica")
