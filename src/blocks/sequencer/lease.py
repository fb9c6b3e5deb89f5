"""Worker-id leases: two live Snowflake generators never share a worker id.

Theory of operation
-------------------
A lease table maps worker ids to ``(owner, expires_at_ms)``. ``LeaseTable`` is the pure part:
given the table and the current time it grants the lowest free or expired worker id, renews a
lease its owner still holds, or releases one. ``LockFileLeases`` keeps the table in a file and
runs every read-modify-write under an exclusive ``flock`` on a sibling lock file, so processes
on one machine see a serial history. Across machines, ``blocks.sequencer.kvlease`` keeps
the leases in a kv cluster instead, where there is no lock and no compare-and-set.

The holder side, ``WorkerLease``, is deliberately pessimistic. It measures validity with the
*monotonic* clock from the moment it *asked* for the lease, minus a safety margin, so neither
a wall-clock step nor a slow reply makes it believe it holds a lease the table already
considers expired. A generator given the lease (``Snowflake(lease=...)``) checks ``held()``
before each batch and stops issuing IDs once it is false; a failed renewal marks it lost.

When a worker id changes hands, the new holder gets the previous lease's ``expires_at_ms`` and
passes it to ``Snowflake(min_timestamp_ms=...)``: the old holder stopped issuing before that
time, so the new one cannot repeat one of its IDs even if it took over immediately.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field

from blocks.core.clock import Clock, SystemClock
from blocks.core.codec import pack, unpack
from blocks.core.errors import Conflict, Corruption, InvalidArgument, Unavailable
from blocks.sequencer.statefile import read_state, write_state

__all__ = ["LeaseRecord", "LeaseTable", "LockFileLeases", "WorkerLease"]


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    owner: str
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class LeaseTable:
    """Immutable map of worker id to lease; methods return a new table."""

    workers: int
    records: dict[int, LeaseRecord] = field(default_factory=dict)

    def grant(self, owner: str, now_ms: int, ttl_ms: int) -> tuple[LeaseTable, int, int]:
        """``(table, worker_id, previous_expires_at_ms)`` for the lowest free id."""
        for worker_id in range(self.workers):
            record = self.records.get(worker_id)
            if record is None or not record.owner or record.expires_at_ms <= now_ms:
                previous = record.expires_at_ms if record else 0
                records = dict(self.records)
                records[worker_id] = LeaseRecord(owner, now_ms + ttl_ms)
                return LeaseTable(self.workers, records), worker_id, previous
        raise Unavailable(f"all {self.workers} worker ids are leased")

    def renew(self, worker_id: int, owner: str, now_ms: int, ttl_ms: int) -> LeaseTable:
        record = self.records.get(worker_id)
        if record is None or record.owner != owner or record.expires_at_ms <= now_ms:
            raise Conflict(f"worker id {worker_id} is no longer leased to {owner}")
        records = dict(self.records)
        records[worker_id] = LeaseRecord(owner, now_ms + ttl_ms)
        return LeaseTable(self.workers, records)

    def release(self, worker_id: int, owner: str, now_ms: int) -> LeaseTable:
        record = self.records.get(worker_id)
        if record is None or record.owner != owner:
            return self
        records = dict(self.records)
        # The holder has stopped: its IDs carry timestamps up to now at most, so the next
        # holder starts after now rather than after the old expiry.
        records[worker_id] = LeaseRecord("", min(record.expires_at_ms, now_ms))
        return LeaseTable(self.workers, records)

    def encode(self) -> bytes:
        rows = [[wid, rec.owner, rec.expires_at_ms] for wid, rec in sorted(self.records.items())]
        return pack({"workers": self.workers, "rows": rows})

    @classmethod
    def decode(cls, data: bytes) -> LeaseTable:
        try:
            decoded = unpack(data)
            records = {
                int(wid): LeaseRecord(str(owner), int(expires))
                for wid, owner, expires in decoded["rows"]
            }
            return cls(int(decoded["workers"]), records)
        except (InvalidArgument, KeyError, TypeError, ValueError) as error:
            raise Corruption(f"lease table does not decode: {error}") from None


class WorkerLease:
    """The holder's view of one lease; ``held()`` is what a generator checks."""

    __slots__ = (
        "_clock",
        "_lost",
        "_valid_until_s",
        "owner",
        "previous_expires_at_ms",
        "worker_id",
    )

    def __init__(
        self,
        worker_id: int,
        owner: str,
        previous_expires_at_ms: int,
        clock: Clock,
        valid_until_s: float,
    ) -> None:
        self.worker_id = worker_id
        self.owner = owner
        self.previous_expires_at_ms = previous_expires_at_ms
        self._clock = clock
        self._valid_until_s = valid_until_s
        self._lost = False

    def held(self) -> bool:
        return not self._lost and self._clock.monotonic() < self._valid_until_s

    def extend(self, valid_until_s: float) -> None:
        self._valid_until_s = max(self._valid_until_s, valid_until_s)

    def mark_lost(self) -> None:
        self._lost = True


class LockFileLeases:
    """Worker-id leases shared by the processes of one machine through ``directory``."""

    def __init__(
        self,
        directory: str,
        *,
        workers: int = 1024,
        ttl_ms: int = 10_000,
        safety_margin_ms: int = 1_000,
        clock: Clock | None = None,
        fsync: bool = True,
    ) -> None:
        if not 0 < workers <= 1 << 16 or not 0 <= safety_margin_ms < ttl_ms:
            raise InvalidArgument("need 0 < workers <= 65536 and 0 <= safety_margin_ms < ttl_ms")
        os.makedirs(directory, exist_ok=True)
        self._table_path = os.path.join(directory, "leases.state")
        self._lock_path = os.path.join(directory, "leases.lock")
        self._workers = workers
        self._ttl_ms = ttl_ms
        self._margin_s = safety_margin_ms / 1000.0
        self._clock: Clock = clock or SystemClock()
        self._fsync = fsync

    def _load(self) -> LeaseTable:
        data = read_state(self._table_path)
        return LeaseTable(self._workers) if data is None else LeaseTable.decode(data)

    def _store(self, table: LeaseTable) -> None:
        write_state(self._table_path, table.encode(), fsync=self._fsync)

    def _locked(self) -> int:
        descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        return descriptor

    def _valid_until(self, asked_at_s: float) -> float:
        return asked_at_s + self._ttl_ms / 1000.0 - self._margin_s

    def acquire(self, owner: str) -> WorkerLease:
        """Lease the lowest free worker id to ``owner``; ``Unavailable`` if none is free."""
        asked_at_s = self._clock.monotonic()
        descriptor = self._locked()
        try:
            table, worker_id, previous = self._load().grant(
                owner, self._clock.now_ms(), self._ttl_ms
            )
            self._store(table)
        finally:
            os.close(descriptor)
        return WorkerLease(worker_id, owner, previous, self._clock, self._valid_until(asked_at_s))

    def renew(self, lease: WorkerLease) -> None:
        """Extend ``lease``; on ``Conflict`` (someone else has it now) the lease is lost."""
        asked_at_s = self._clock.monotonic()
        descriptor = self._locked()
        try:
            try:
                table = self._load().renew(
                    lease.worker_id, lease.owner, self._clock.now_ms(), self._ttl_ms
                )
            except Conflict:
                lease.mark_lost()
                raise
            self._store(table)
        finally:
            os.close(descriptor)
        lease.extend(self._valid_until(asked_at_s))

    def release(self, lease: WorkerLease) -> None:
        lease.mark_lost()
        descriptor = self._locked()
        try:
            table = self._load().release(lease.worker_id, lease.owner, self._clock.now_ms())
            self._store(table)
        finally:
            os.close(descriptor)
