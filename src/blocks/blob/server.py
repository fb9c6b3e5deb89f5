"""``BlobServer``: the S3-compatible HTTP endpoint in front of a ``BlobStore``.

Theory of operation. One asyncio task per connection reads a request head, lets
``S3Handler`` authenticate it and read the body (``http.RequestBody``: whole, or piece by
piece for a streamed PUT), writes the response (head and body in one send; a streamed body
a batch of pieces at a time, pulling the next batch in a worker thread while the previous
one is on the wire) and loops while the connection is kept alive. Connections are bounded (``connections_max``;
past it new ones are closed at once) and an idle connection is dropped after
``idle_timeout_s``: a connection waiting for a request head is listed with the time it
began to wait, and one sweeper task aborts those that waited too long (checked every
``IDLE_SWEEP_S`` at most), instead of a timer armed and cancelled around every head read
(15-20 us of the event loop's time per request under uvloop). ``stop()`` closes the listener, lets requests in flight finish for up to a
grace period, then cancels the rest. TLS is optional (an ``ssl.SSLContext``); over HTTPS boto3
sends aws-chunked bodies with checksum trailers, over plain HTTP signed whole bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from concurrent.futures import Executor

from blocks.blob.api import BlobStore
from blocks.blob.cluster.peers import ShardHost
from blocks.blob.s3.handler import S3Config, S3Handler
from blocks.blob.s3.http import (
    HttpError,
    RequestBody,
    RequestHead,
    Response,
    read_head,
    render_response,
)
from blocks.blob.s3.xml import error_document
from blocks.core.clock import Clock

__all__ = ["BlobServer"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("blocks.access")  # one line a request with --access-log

STREAM_BATCH_BYTES = 4 * 1024 * 1024
"""A streamed response's pieces are fetched this many bytes at a time: one worker-thread trip
per batch, not per piece (a large GET's pieces are shard views, a quarter of a chunk each
with 4+2 coding: a 64 MiB GET took 64 trips, now 16). The store reads a chunk whole before
its first piece, so a batch of a chunk's pieces adds no wait."""
STREAM_BUFFER_BYTES = 1024 * 1024
"""How much of a request the connection's reader buffers ahead (and the largest head it
scans before giving up; ``http.parse_head`` still refuses heads over 64 KiB)."""


IDLE_SWEEP_S = 1.0
"""The longest pause between two sweeps for idle connections (a shorter idle timeout sweeps
four times per timeout): an idle connection is dropped at most this much late."""


class BlobServer:
    """Serves ``store`` over the S3 API on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        store: BlobStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: S3Config | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Clock | None = None,
        connections_max: int = 256,
        idle_timeout_s: float = 60.0,
        local_shards: ShardHost | None = None,
    ) -> None:
        self.store = store
        self.handler = S3Handler(store, config, clock, local_shards)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.connections_max = connections_max
        self.idle_timeout_s = idle_timeout_s
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._busy: set[asyncio.Task[None] | None] = set()
        self._idle_since: dict[asyncio.StreamWriter, float] = {}
        """Connections waiting for a request head -> when (loop time) they began to wait."""
        self._sweeper: asyncio.Task[None] | None = None
        self.idle_closed = 0
        """Connections dropped because no request head came within ``idle_timeout_s``."""
        self.refused_connections = 0
        """Connections closed at once because ``connections_max`` were open."""
        self.body_timeouts = 0
        """Requests cut with RequestTimeout because their body came too slowly."""

    @property
    def connections_open(self) -> int:
        """Connections being served now (at most ``connections_max``)."""
        return len(self._connections)

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, ssl=self.ssl_context, limit=STREAM_BUFFER_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())

    async def _sweep_idle(self) -> None:
        """Abort every connection that has waited ``idle_timeout_s`` for a request head."""
        loop = asyncio.get_running_loop()
        pause_s = min(IDLE_SWEEP_S, self.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(pause_s)
            cutoff = loop.time() - self.idle_timeout_s
            for writer, since in list(self._idle_since.items()):
                if since <= cutoff:
                    del self._idle_since[writer]
                    self.idle_closed += 1
                    writer.transport.abort()  # the head read ends; the connection closes

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._server is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._server.close()
        if self._connections:
            # Idle keep-alive connections are dropped at once (abort: no TLS goodbye to wait
            # for); busy ones get the grace period to finish the request they are serving.
            for task, writer in list(self._connections.items()):
                if task not in self._busy:
                    writer.transport.abort()
            _, pending = await asyncio.wait(set(self._connections), timeout=grace_s)
            for task in pending:
                self._connections[task].transport.abort()
            if pending:
                _, pending = await asyncio.wait(pending, timeout=1.0)
            for task in pending:
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=grace_s)
        self._server = None
        self.handler.workers.close()

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.connections_max:
            # Answer before closing, so the client sees why (nothing of its request is read).
            self.refused_connections += 1
            refusal = Response(
                503,
                {"Content-Type": "application/xml"},
                error_document("SlowDown", "too many connections; retry", "", "0"),
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    _write(writer, refusal, head_only=False, keep_alive=False), 1.0
                )
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self.handler.connections_open = len(self._connections)
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass
        finally:
            self._connections.pop(task, None)
            self.handler.connections_open = len(self._connections)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._idle_since[writer] = loop.time()  # the sweeper's to drop (no timer here)
            try:
                head = await read_head(reader)
            except HttpError as error:
                if not writer.transport.is_closing():  # else: swept while inside a head
                    await _write(writer, _http_error(error), head_only=False, keep_alive=False)
                return
            finally:
                self._idle_since.pop(writer, None)
            if head is None:
                return
            task = asyncio.current_task()
            self._busy.add(task)
            try:
                keep_alive = await self._serve_request(head, reader, writer)
            finally:
                self._busy.discard(task)
            if not keep_alive:
                return

    async def _serve_request(
        self, head: RequestHead, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; return whether the connection may serve another."""

        async def send_continue() -> None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()

        body = RequestBody(reader, head, self.handler.config.body_read_timeout_s)
        try:
            response = await self.handler.handle(head, send_continue, body)
        except HttpError as error:
            self.body_timeouts += error.code == "RequestTimeout"
            await _write(writer, _http_error(error), head_only=False, keep_alive=False)
            return False
        except Exception:
            log.exception("unexpected error serving %s %s", head.method, head.raw_path)
            failure = _http_error(HttpError(500, "internal error"))
            await _write(writer, failure, head_only=False, keep_alive=False)
            return False
        # A body we refused to read (a failed signature) or read only in part (a refused
        # PUT) leaves the stream unusable.
        keep_alive = head.keep_alive and body.consumed
        access_log.info("%s %s %d", head.method, head.raw_path, response.status)
        return await _write(
            writer,
            response,
            head_only=head.method == "HEAD",
            keep_alive=keep_alive,
            executor=self.handler.workers.requests,
        )


def _http_error(error: HttpError) -> Response:
    code = error.code or {413: "EntityTooLarge", 501: "NotImplemented"}.get(
        error.status, "BadRequest"
    )
    body = error_document(code, error.message, "", "0")
    return Response(error.status, {"Content-Type": "application/xml"}, body)


async def _write(
    writer: asyncio.StreamWriter,
    response: Response,
    *,
    head_only: bool,
    keep_alive: bool,
    executor: Executor | None = None,
) -> bool:
    """Send ``response``; return whether the connection may serve another request."""
    pieces = response.pieces
    try:
        # Head and body in one call: one send (writev) instead of two, and the client reads
        # them in one go; on loopback each send also wakes the client.
        writer.writelines(render_response(response, head_only=head_only, keep_alive=keep_alive))
        length = response.content_length or 0
        if (
            pieces is not None
            and not head_only
            and not await _stream(writer, pieces, length, executor)
        ):
            return False
        await writer.drain()
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    return keep_alive


async def _stream(
    writer: asyncio.StreamWriter,
    pieces: Iterator[bytes | memoryview],
    length: int,
    executor: Executor | None,
) -> bool:
    """Write the pieces, fetching the next batch of them (``STREAM_BATCH_BYTES``) in a worker
    thread while the current one is sent. A failure half-way aborts the connection: the
    client sees a short body, never wrong bytes. Returns whether everything was sent."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[list[bytes | memoryview]] | None = None
    sent = 0
    try:
        batches = _Batches(pieces, STREAM_BATCH_BYTES)
        pending = loop.run_in_executor(executor, batches.take)
        while True:
            batch = await pending
            pending = None
            if not batch:
                break
            pending = loop.run_in_executor(executor, batches.take)
            sent += sum(len(piece) for piece in batch)
            writer.writelines(batch)
            await writer.drain()
    except ConnectionError:
        writer.transport.abort()
        return False
    except Exception:
        log.exception("response body failed after %d of %d bytes", sent, length)
        writer.transport.abort()
        return False
    finally:
        if pending is not None:  # let the thread leave the iterator before it is closed
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
    if sent != length:
        log.error("response body was %d bytes, announced %d", sent, length)
        writer.transport.abort()
        return False
    return True


class _Batches:
    """A body's pieces taken a batch at a time (``take``, in a worker thread, one call at a
    time). A failure after some pieces of a batch were read is held back to the next
    ``take``: the pieces before it are sent first, as they were one by one."""

    def __init__(self, pieces: Iterator[bytes | memoryview], batch_bytes: int) -> None:
        self._pieces = pieces
        self._batch_bytes = batch_bytes
        self._error: Exception | None = None

    def take(self) -> list[bytes | memoryview]:
        """The next pieces, as many as make ``batch_bytes`` (fewer at the end; none once
        the body is all taken); raises what reading them raised."""
        if self._error is not None:
            raise self._error
        batch: list[bytes | memoryview] = []
        size = 0
        try:
            for piece in self._pieces:
                batch.append(piece)
                size += len(piece)
                if size >= self._batch_bytes:
                    break
        except Exception as error:
            if not batch:
                raise
            self._error = error
        return batch
