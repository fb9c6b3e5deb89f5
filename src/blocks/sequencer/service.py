"""The sequencer's gRPC service: Snowflake IDs from a leased worker id, plus tickets.

On start the server leases a worker id from ``<data_dir>/leases`` (``LockFileLeases``), builds
a ``Snowflake`` that checks the lease before every batch and starts after the previous
holder's expiry, and renews the lease every third of its TTL. A failed renewal marks the lease
lost: the generator stops issuing IDs (``Unavailable``) and health reports NOT_SERVING. Tickets
come from a ``TicketServer`` in ``<data_dir>/tickets``. On stop the lease is released.

The handler never sleeps on the event loop: it calls ``Snowflake.try_next_ids`` and awaits
``asyncio.sleep`` for the wait it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import BlocksError, InvalidArgument, Unavailable
from blocks.core.server import Server
from blocks.sequencer import sequencer_pb2, sequencer_pb2_grpc
from blocks.sequencer.lease import LockFileLeases, WorkerLease
from blocks.sequencer.snowflake import Snowflake
from blocks.sequencer.tickets import TicketServer

__all__ = ["NEXT_IDS_MAX", "SequencerService", "build_server"]

NEXT_IDS_MAX = 100_000
TICKETS_MAX = 1_000_000
WAITS_MAX = 1000
SERVICE_NAME = "blocks.sequencer.Sequencer"
_log = logging.getLogger(__name__)


class SequencerService(sequencer_pb2_grpc.SequencerServicer):
    def __init__(
        self,
        data_dir: str,
        *,
        clock: Clock | None = None,
        lease_ttl_ms: int = 10_000,
        workers: int = 1024,
        fsync: bool = True,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._leases = LockFileLeases(
            os.path.join(data_dir, "leases"),
            workers=workers,
            ttl_ms=lease_ttl_ms,
            safety_margin_ms=lease_ttl_ms // 5,
            clock=self._clock,
            fsync=fsync,
        )
        self._tickets = TicketServer(os.path.join(data_dir, "tickets"), fsync=fsync)
        self._lease_ttl_ms = lease_ttl_ms
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lease: WorkerLease | None = None
        self._generator: Snowflake | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.on_lease_lost: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        lease = self._leases.acquire(self._owner)
        self._lease = lease
        self._generator = Snowflake(
            lease.worker_id,
            clock=self._clock,
            lease=lease,
            min_timestamp_ms=lease.previous_expires_at_ms,
            backwards_wait_max_ms=max(50, self._lease_ttl_ms // 2),
        )
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever(lease))
        _log.info("sequencer leased worker id %d", lease.worker_id)

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._lease is not None:
            self._leases.release(self._lease)

    async def _renew_forever(self, lease: WorkerLease) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl_ms / 3000.0)
            try:
                self._leases.renew(lease)
            except BlocksError as error:
                _log.error("worker lease lost, no more IDs from this server: %s", error)
                lease.mark_lost()
                if self.on_lease_lost is not None:
                    await self.on_lease_lost()
                return

    @property
    def worker_id(self) -> int:
        return self._require_generator().worker_id

    def _require_generator(self) -> Snowflake:
        if self._generator is None:
            raise Unavailable("sequencer is not started")
        return self._generator

    async def next_ids(self, count: int) -> list[int]:
        if not 0 < count <= NEXT_IDS_MAX:
            raise InvalidArgument(f"count must be in [1, {NEXT_IDS_MAX}]")
        generator = self._require_generator()
        ids: list[int] = []
        async with self._lock:  # one batch at a time keeps each reply's IDs contiguous
            for _ in range(WAITS_MAX):
                chunk, wait_ms = generator.try_next_ids(count - len(ids))
                ids.extend(chunk)
                if len(ids) == count:
                    return ids
                await asyncio.sleep(wait_ms / 1000.0)
        raise Unavailable("clock did not advance")

    async def NextIds(self, request: Any, context: Any) -> Any:
        ids = await self.next_ids(request.count)
        return sequencer_pb2.NextIdsReply(ids=ids, worker_id=self._require_generator().worker_id)

    async def Decode(self, request: Any, context: Any) -> Any:
        fields = self._require_generator().decode(request.id)
        return sequencer_pb2.DecodeReply(
            unix_ms=fields.unix_ms, worker_id=fields.worker_id, sequence=fields.sequence
        )

    async def AllocateTickets(self, request: Any, context: Any) -> Any:
        if not 0 < request.count <= TICKETS_MAX:
            raise InvalidArgument(f"count must be in [1, {TICKETS_MAX}]")
        block = self._tickets.allocate(request.count)
        return sequencer_pb2.AllocateTicketsReply(start=block.start, count=len(block))


def build_server(
    data_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    lease_ttl_ms: int = 10_000,
    fsync: bool = True,
) -> tuple[Server, SequencerService]:
    """A ``Server`` (not yet started) running the sequencer service over ``data_dir``."""
    service = SequencerService(data_dir, lease_ttl_ms=lease_ttl_ms, fsync=fsync)
    server = Server(host=host, port=port, token=token, name="sequencer")
    server.add_component(service.start, service.stop, name="sequencer-lease")

    async def report_not_serving() -> None:
        await server.set_health(False)
        await server.set_health(False, SERVICE_NAME)

    service.on_lease_lost = report_not_serving
    server.add_service(
        sequencer_pb2_grpc.add_SequencerServicer_to_server,
        service,
        health_name=SERVICE_NAME,
    )
    return server, service
