"""The sequencer's gRPC service: Snowflake IDs from a leased worker id, plus tickets.

On start the server locks its data directory (a second server on it fails with
``FailedPrecondition``), leases a worker id from a ``LeaseSource`` (a lock file under
``<data_dir>/leases``, or a kv cluster with ``lease_from``), and builds a ``Snowflake`` that
starts above both the previous holder's bound and this directory's persisted high-water mark
(``blocks.sequencer.datadir``), so no restart, clock step or change of holder makes it issue
an ID below one already handed out. It renews the lease every third of its TTL. The lease is
checked on the monotonic clock before every batch and again before every reply: a lost or
expired lease (a failed renewal, or a pause past the lease) answers ``Unavailable`` and
health reports NOT_SERVING. Before a reply leaves, the high-water mark is persisted above its
IDs. Tickets come from a ``TicketServer`` in ``<data_dir>/tickets``. On stop the lease is
released with the bound its IDs stayed below.

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
from blocks.core.errors import InvalidArgument, Unavailable
from blocks.core.server import Server
from blocks.sequencer import sequencer_pb2, sequencer_pb2_grpc
from blocks.sequencer.datadir import DataDirLock, HighWater
from blocks.sequencer.kvlease import KvLeaseConfig
from blocks.sequencer.lease import WorkerLease
from blocks.sequencer.lease_sources import FileLeaseSource, KvLeaseSource, LeaseFrom, LeaseSource
from blocks.sequencer.snowflake import Snowflake
from blocks.sequencer.tickets import TicketServer

__all__ = ["NEXT_IDS_MAX", "SequencerService", "build_server"]

NEXT_IDS_MAX = 100_000
TICKETS_MAX = 1_000_000
WAITS_MAX = 1000
SERVICE_NAME = "blocks.sequencer.Sequencer"
_log = logging.getLogger(__name__)


class SequencerService(sequencer_pb2_grpc.SequencerServicer):
    """``lease_source`` defaults to ``FileLeaseSource`` over ``data_dir``; the safety margin
    (``lease_margin_ms``, default a fifth of the TTL) is how much earlier than the TTL the
    holder stops and how much later a contender may take over (clock-rate skew and slow
    replies)."""

    def __init__(
        self,
        data_dir: str,
        *,
        clock: Clock | None = None,
        lease_ttl_ms: int = 10_000,
        lease_margin_ms: int | None = None,
        lease_source: LeaseSource | None = None,
        fsync: bool = True,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        margin_ms = lease_ttl_ms // 5 if lease_margin_ms is None else lease_margin_ms
        self._data_dir = data_dir
        self._dir_lock = DataDirLock(data_dir)
        self._source: LeaseSource = lease_source or FileLeaseSource(
            os.path.join(data_dir, "leases"),
            ttl_ms=lease_ttl_ms,
            margin_ms=margin_ms,
            clock=self._clock,
            fsync=fsync,
        )
        self._fsync = fsync
        self._tickets: TicketServer | None = None
        self._high_water: HighWater | None = None
        self._lease_ttl_ms = lease_ttl_ms
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lease: WorkerLease | None = None
        self._generator: Snowflake | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._issued_below_ms: int | None = None
        self._lock = asyncio.Lock()
        self.on_lease_lost: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        self._dir_lock.acquire()
        try:
            self._high_water = HighWater(self._data_dir, fsync=self._fsync)
            self._tickets = TicketServer(os.path.join(self._data_dir, "tickets"), fsync=self._fsync)
            lease = await self._source.acquire(self._owner)
        except BaseException:
            self._dir_lock.release()
            raise
        self._lease = lease
        start_ms = max(lease.previous_expires_at_ms, self._high_water.mark_ms)
        self._generator = Snowflake(
            lease.worker_id,
            clock=self._clock,
            lease=lease,
            min_timestamp_ms=start_ms,
            backwards_wait_max_ms=max(50, self._lease_ttl_ms // 2),
        )
        self._renewer = asyncio.get_running_loop().create_task(self._source.keep(lease, self._lost))
        _log.info("sequencer leased worker id %d, IDs above %d ms", lease.worker_id, start_ms)

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        try:
            if self._lease is not None:
                await self._source.release(self._lease, self._issued_below_ms)
            await self._source.close()
        finally:
            self._dir_lock.release()

    async def _lost(self, reason: BaseException | None) -> None:
        _log.error("worker lease lost, no more IDs from this server: %s", reason)
        if self.on_lease_lost is not None:
            await self.on_lease_lost()

    def _check_lease(self) -> None:
        lease = self._lease
        if lease is not None and not lease.held():
            raise Unavailable(
                f"worker id {lease.worker_id}: lease lost or expired (this server cannot be "
                "sure it still holds it); refusing to issue IDs"
            )

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
                self._check_lease()
                chunk, wait_ms = generator.try_next_ids(count - len(ids))
                ids.extend(chunk)
                if len(ids) == count:
                    return self._hand_out(generator, ids)
                await asyncio.sleep(wait_ms / 1000.0)
        raise Unavailable("clock did not advance")

    def _hand_out(self, generator: Snowflake, ids: list[int]) -> list[int]:
        """Check the lease once more (a pause may have struck mid-batch) and persist the
        high-water mark above ``ids`` before they leave the process."""
        self._check_lease()
        assert self._high_water is not None
        last_ms = generator.decode(ids[-1]).unix_ms
        self._high_water.cover(last_ms)
        self._issued_below_ms = last_ms + 1
        return ids

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
        if self._tickets is None:
            raise Unavailable("sequencer is not started")
        block = self._tickets.allocate(request.count)
        return sequencer_pb2.AllocateTicketsReply(start=block.start, count=len(block))


def build_server(
    data_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    lease_ttl_ms: int = 10_000,
    lease_margin_ms: int | None = None,
    lease_from: LeaseFrom | None = None,
    lease_token: str | None = None,
    lease_workers: int = 1024,
    fsync: bool = True,
) -> tuple[Server, SequencerService]:
    """A ``Server`` (not yet started) running the sequencer service over ``data_dir``; with
    ``lease_from`` its worker id is leased from a kv cluster or a shared lock-file directory."""
    clock = SystemClock()
    margin_ms = lease_ttl_ms // 5 if lease_margin_ms is None else lease_margin_ms
    source: LeaseSource | None = None
    if lease_from is not None and lease_from.directory is not None:
        source = FileLeaseSource(
            lease_from.directory, ttl_ms=lease_ttl_ms, margin_ms=margin_ms, clock=clock, fsync=fsync
        )
    elif lease_from is not None:
        config = KvLeaseConfig(
            workers=lease_workers, ttl_ms=lease_ttl_ms, safety_margin_ms=margin_ms
        )
        source = KvLeaseSource(lease_from.addresses, config, clock=clock, token=lease_token)
    service = SequencerService(
        data_dir,
        clock=clock,
        lease_ttl_ms=lease_ttl_ms,
        lease_margin_ms=margin_ms,
        lease_source=source,
        fsync=fsync,
    )
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
