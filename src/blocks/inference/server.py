"""The OpenAI-compatible HTTP server over an ``AsyncEngine``.

Theory of operation: one asyncio connection handler per client reads requests with
``blocks.inference.http`` and routes them:

* ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text);
* ``POST /v1/chat/completions`` and ``POST /v1/completions``, whole or streamed as SSE;
* ``POST /v1/embeddings`` (mean-pooled final hidden states, see ``embeddings``).

API keys: when the server has any, every ``/v1`` request needs ``Authorization: Bearer
<key>`` naming one (else 401 in OpenAI's error shape); the key is also the unit of token
budgets and fairness. Admission refusals become 429 with ``Retry-After`` (whole seconds,
rounded up) and ``retry-after-ms``, which OpenAI's client reads before retrying.

Time comes from the injected ``clock`` (wall time by default): an answer's ``created`` is its
wall-clock second, and the access log's durations are monotonic.

Each connection's requests are read ahead by a ``connection.RequestReader`` (keep-alive and
pipelining: answers go out one after another, in request order) and taken in turn by
``connection_loop.serve_requests``, the loop the router shares. While a request generates,
the handler watches the reader's ``gone`` event, never the socket itself: end-of-stream means
the client went away, and the generation is cancelled (its KV blocks freed) instead of
running on. Streamed answers are chunked on HTTP/1.1, so the connection carries on afterwards.

Limits (``ServerLimits`` and ``http``'s named maxima): connections, pipelined requests per
connection, idle time, head bytes, body bytes, JSON nesting depth. Each breach is answered
with an OpenAI-shaped error whose ``code`` names it (a connection over the cap gets 503; an
idle connection is closed) and counted in ``blocks_inference_http_rejections{reason}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import math
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import BlocksError, InvalidArgument, Overloaded
from blocks.inference import openai_api as oa
from blocks.inference.async_engine import AsyncEngine
from blocks.inference.connection import RequestReader, ServerLimits
from blocks.inference.connection_loop import ConnectionHooks, refuse_connection, serve_requests
from blocks.inference.embeddings import answer_embeddings
from blocks.inference.http import MAX_HEAD_BYTES, EventStream, HttpError, Request, write_json
from blocks.inference.params import TokenDelta
from blocks.inference.responses import Answer, write_events, write_whole

__all__ = ["InferenceServer"]

log = logging.getLogger(__name__)


class InferenceServer:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        model_name: str,
        api_keys: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ServerLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self.clock: Clock = clock if clock is not None else SystemClock()  # wall: ``created``
        self.model_name = model_name
        self.api_keys = tuple(api_keys)
        self.host = host
        self.port = port
        self.limits = limits or ServerLimits()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count()
        self._embedding = asyncio.Lock()  # one embedding request computes at a time

    async def start(self) -> int:
        """Start the engine and listen; returns the bound port."""
        await self.engine.start()
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None
        await self.engine.stop()

    # ------------------------------------------------------------------ connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        metrics = self.engine.metrics
        if len(self._connections) >= self.limits.max_connections:
            metrics.count_http_rejection("too_many_connections")
            body = oa.error_body(
                f"more than {self.limits.max_connections} open connections; retry later",
                "server_error",
                code="too_many_connections",
            )
            await refuse_connection(writer, body)
            return
        self._connections.add(task)
        metrics.http_connections.inc()
        hooks = ConnectionHooks(
            self.clock.monotonic, log, "inference", count_rejection=metrics.count_http_rejection
        )
        await serve_requests(self._connections, reader, writer, self._handle, self.limits, hooks)

    async def _handle(
        self, request: Request, requests: RequestReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        head = request.head
        try:
            if head.path == "/health" and head.method == "GET":
                await write_json(writer, 200, {"status": "ok"})
                return True
            if head.path == "/metrics" and head.method == "GET":
                data = self.engine.metrics.exposition()
                await write_json(writer, 200, data, content_type="text/plain; version=0.0.4")
                return True
            api_key = self._authenticate(request)
            if head.path == "/v1/models" and head.method == "GET":
                await write_json(writer, 200, self._models())
                return True
            if head.path in ("/v1/chat/completions", "/v1/completions"):
                if head.method != "POST":
                    raise oa.ApiError(405, "use POST")
                return await self._generate(request, api_key, requests, writer)
            if head.path == "/v1/embeddings":
                if head.method != "POST":
                    raise oa.ApiError(405, "use POST")
                engine, name = self.engine.engine, self.model_name
                body = await answer_embeddings(request.json(), engine, name, self._embedding)
                await write_json(writer, 200, body)
                return True
            raise oa.ApiError(404, f"no route for {head.method} {head.path}", code="not_found")
        except oa.ApiError as error:
            await write_json(writer, error.status, error.body())
            return True
        except HttpError as error:  # a body that is not acceptable JSON; framing is intact
            self.engine.metrics.count_http_rejection(error.reason)
            await write_json(writer, error.status, oa.http_error_body(error))
            return True
        except Exception:  # our bug: the client still gets an answer, then the connection closes
            log.exception("inference request failed: %s %s", head.method, head.path)
            self.engine.metrics.count_http_rejection("internal_error")
            body = oa.error_body("internal server error", "server_error", code="internal_error")
            await write_json(writer, 500, body, keep_alive=False)
            return False

    def _authenticate(self, request: Request) -> str:
        header = request.head.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not self.api_keys:
            return token
        if not any(hmac.compare_digest(token.encode(), key.encode()) for key in self.api_keys):
            raise oa.ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return token

    def _models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": self.model_name, "object": "model", "created": 0, "owned_by": "blocks"}
            ],
        }

    # ------------------------------------------------------------------ generation

    async def _generate(
        self,
        request: Request,
        api_key: str,
        requests: RequestReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        body = request.json()
        chat = request.head.path == "/v1/chat/completions"
        tokenizer = self.engine.tokenizer
        if chat:
            messages, parsed = oa.parse_chat(body)
            try:
                prompt: str | list[int] = tokenizer.apply_chat_template(messages)
            except InvalidArgument as error:
                raise oa.ApiError(400, str(error), param="messages") from None
        else:
            parsed = oa.parse_completion(body)
            prompt = parsed.prompt
        if parsed.model and parsed.model != self.model_name:
            raise oa.ApiError(
                404,
                f"The model '{parsed.model}' does not exist; this server has '{self.model_name}'.",
                param="model",
                code="model_not_found",
            )
        oa.check_vocabulary(parsed.params, self.engine.vocab_size)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{next(self._ids)}"
        streams = [
            self.engine.stream(prompt, params, api_key=api_key, priority=parsed.priority)
            for params in parsed.choice_params()
        ]
        created = self.clock.now_ms() // 1000
        answer = Answer(rid, chat, self.model_name, parsed, tokenizer.decode, created)
        events = EventStream(writer, request.head)
        work = asyncio.create_task(self._respond(answer, streams, writer, events))
        watcher = asyncio.create_task(requests.gone.wait())
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():  # the client hung up: cancel the generation
                work.cancel()
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await work
            for stream in streams:
                await stream.aclose()
        if work.cancelled():
            return False
        if work.exception() is not None and events.started:  # too late for an error status
            log.error("inference stream failed", exc_info=work.exception())
            self.engine.metrics.count_http_rejection("internal_error")
            return False
        return work.result() and (not parsed.stream or events.keep_alive)

    async def _respond(
        self,
        answer: Answer,
        streams: list[AsyncGenerator[TokenDelta, None]],
        writer: asyncio.StreamWriter,
        events: EventStream,
    ) -> bool:
        """Wait for every choice's first delta, then write the answer (see ``responses``)."""
        try:
            firsts = [await anext(stream) for stream in streams]
        except Overloaded as error:
            await _too_many(writer, error)
            return True
        except InvalidArgument as error:
            raise oa.ApiError(400, str(error)) from None
        except BlocksError as error:
            await write_json(writer, 503, oa.error_body(str(error), "server_error"))
            return True
        except StopAsyncIteration:  # pragma: no cover - a stream always ends with a delta
            raise oa.ApiError(500, "empty generation", kind="server_error") from None
        if answer.parsed.stream:
            await write_events(answer, firsts, streams, events)
            return True
        try:
            body = await write_whole(answer, firsts, streams)
        except Overloaded as error:
            await _too_many(writer, error)
            return True
        await write_json(writer, 200, body)
        return True


async def _too_many(writer: asyncio.StreamWriter, error: Overloaded) -> None:
    headers = {
        "Retry-After": str(max(1, math.ceil(error.retry_after_ms / 1000))),
        "retry-after-ms": str(error.retry_after_ms),
    }
    body = oa.error_body(str(error), "requests", code="rate_limit_exceeded")
    await write_json(writer, 429, body, extra_headers=headers)
