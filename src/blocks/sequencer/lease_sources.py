"""Where a sequencer server gets its worker id: a lock file on one machine, or a kv cluster.

Theory of operation
-------------------
``LeaseSource`` is the service's one view of both: ``acquire`` a ``WorkerLease``, ``keep`` it
(renew every third of the TTL until it is lost, then call back), ``release`` it with the
bound its IDs stayed below, ``close``. ``FileLeaseSource`` runs ``LockFileLeases`` in
``<data_dir>/leases`` or the directory of ``--lease-from file:///DIR``: safe only among
processes of one machine sharing that directory.
``KvLeaseSource`` runs ``KvLeases`` against the kv cluster named by ``--lease-from
kv://host:port[,host:port...]``: safe across machines, with the epoch as fencing token.

Both leases count validity on the holder's *monotonic* clock from before it asked, minus
the safety margin; the generator checks ``held()`` before every batch and the service again
before every reply, so a holder paused past its lease (SIGSTOP, a long GC, a frozen VM)
answers ``Unavailable`` on waking instead of issuing. A contender takes a kv-held id only
after seeing it unchanged for ``ttl + margin`` (``KvLeaseConfig.takeover_after_s``), and the
new holder's IDs start above the old holder's published ``until_ms``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from blocks.core.clock import Clock
from blocks.core.errors import BlocksError, InvalidArgument
from blocks.sequencer.kvlease import KvLeaseConfig, KvLeases, KvWorkerLease
from blocks.sequencer.lease import LockFileLeases, WorkerLease

__all__ = [
    "ACQUIRE_TIMEOUT_S",
    "FileLeaseSource",
    "KvLeaseSource",
    "LeaseFrom",
    "LeaseSource",
    "parse_lease_from",
]

ACQUIRE_TIMEOUT_S = 60.0
"""How long ``serve`` tries to lease a worker id from kv before it gives up."""
LEASE_FROM_ADDRESSES_MAX = 64
_log = logging.getLogger(__name__)

OnLost = Callable[[BaseException | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LeaseFrom:
    """A parsed ``--lease-from``: kv ``addresses``, or a lock-file ``directory``."""

    addresses: tuple[str, ...] = ()
    directory: str | None = None


def parse_lease_from(text: str) -> LeaseFrom:
    """``kv://host:port[,host:port...]`` or ``file:///dir``; ``InvalidArgument`` otherwise."""
    scheme, sep, rest = text.partition("://")
    if sep and scheme == "file" and rest.startswith("/"):
        return LeaseFrom(directory=rest)
    if not sep or scheme != "kv":
        raise InvalidArgument(
            f"--lease-from wants kv://HOST:PORT[,HOST:PORT...] or file:///DIR, got {text!r}"
        )
    addresses = [part.strip() for part in rest.split(",") if part.strip()]
    if not addresses or len(addresses) > LEASE_FROM_ADDRESSES_MAX:
        raise InvalidArgument(f"--lease-from needs 1..{LEASE_FROM_ADDRESSES_MAX} HOST:PORTs")
    for address in addresses:
        host, colon, port = address.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"--lease-from: {address!r} is not HOST:PORT")
    return LeaseFrom(addresses=tuple(addresses))


class LeaseSource(Protocol):
    """A table of worker-id leases, seen from one server."""

    async def acquire(self, owner: str) -> WorkerLease: ...

    async def keep(self, lease: WorkerLease, on_lost: OnLost) -> None:
        """Renew ``lease`` until it is lost or runs out; then mark it lost and call back."""
        ...

    async def release(self, lease: WorkerLease, issued_below_ms: int | None) -> None: ...

    async def close(self) -> None: ...


class FileLeaseSource:
    """``LockFileLeases`` in ``directory`` (``<data_dir>/leases`` by default): servers of one
    machine share a table by naming the same directory."""

    def __init__(
        self, directory: str, *, ttl_ms: int, margin_ms: int, clock: Clock, fsync: bool = True
    ) -> None:
        self._ttl_ms = ttl_ms
        self._leases = LockFileLeases(
            directory,
            ttl_ms=ttl_ms,
            safety_margin_ms=margin_ms,
            clock=clock,
            fsync=fsync,
        )

    async def acquire(self, owner: str) -> WorkerLease:
        return self._leases.acquire(owner)

    async def keep(self, lease: WorkerLease, on_lost: OnLost) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000.0)
            try:
                self._leases.renew(lease)
            except BlocksError as error:
                lease.mark_lost()
                await on_lost(error)
                return

    async def release(self, lease: WorkerLease, issued_below_ms: int | None) -> None:
        self._leases.release(lease)

    async def close(self) -> None:
        return None


class KvLeaseSource:
    """``KvLeases`` over a kv cluster reached through ``addresses`` (connected on acquire)."""

    def __init__(
        self,
        addresses: Sequence[str],
        config: KvLeaseConfig,
        *,
        clock: Clock,
        token: str | None = None,
        acquire_timeout_s: float = ACQUIRE_TIMEOUT_S,
    ) -> None:
        self._addresses = list(addresses)
        self._config = config
        self._clock = clock
        self._token = token
        self._acquire_timeout_s = acquire_timeout_s
        self._client: object | None = None
        self._leases: KvLeases | None = None

    async def acquire(self, owner: str) -> WorkerLease:
        from blocks.kv import connect

        client = await connect(self._addresses, token=self._token)
        self._client = client
        self._leases = KvLeases(client, self._config, clock=self._clock)
        lease = await self._leases.acquire(owner, timeout_s=self._acquire_timeout_s)
        _log.info("worker id %d leased from kv, epoch %d", lease.worker_id, lease.epoch)
        return lease

    def _require(self, lease: WorkerLease) -> tuple[KvLeases, KvWorkerLease]:
        assert self._leases is not None and isinstance(lease, KvWorkerLease)
        return self._leases, lease

    async def keep(self, lease: WorkerLease, on_lost: OnLost) -> None:
        leases, kv_lease = self._require(lease)
        await leases.keep(kv_lease, on_lost)

    async def release(self, lease: WorkerLease, issued_below_ms: int | None) -> None:
        leases, kv_lease = self._require(lease)
        try:
            await leases.release(kv_lease, issued_below_ms)
        except BlocksError as error:  # the id then frees itself after ttl + margin
            _log.warning("could not release worker id %d: %s", lease.worker_id, error)

    async def close(self) -> None:
        from blocks.kv import KVClient

        if isinstance(self._client, KVClient):
            await self._client.close()
        self._client = None
