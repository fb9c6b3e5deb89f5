"""Worker-id leases from a kv cluster: ``KvLeases`` and the holder's ``KvWorkerLease``.

Theory of operation
-------------------
The rules live in ``kvlease_core``; this module runs them over a kv client (``KVClient`` or
anything with the same versioned ``get``/``put``). One key per worker id
(``<prefix><worker id>``). Every step is a quorum read, at most one put with that read's
context, and for claims and renewals a quorum read back:

* ``try_acquire(owner)`` probes up to ``probe_max`` worker ids, starting from a hash of the
  owner so that processes starting together spread out. It claims the first one that is free
  (absent, released) or has looked unchanged for ``ttl + margin``; a claim counts only if the
  read back shows exactly it. ``acquire`` retries until a deadline.
* ``renew(lease)`` reads, checks the record is still the holder's own, writes a fresh token
  and reads back. Validity is extended to ``sent + ttl - margin`` (``sent`` on the monotonic
  clock before the put) only when the read back confirms. Another owner or siblings mark the
  lease lost (``Conflict``); ``Unavailable``/``Timeout`` leave it to run out on its own.
* ``release(lease)`` stops the holder first, then writes ``released`` if it still holds.
* Whoever reads siblings writes back their deterministic ``contested`` resolution (best
  effort), which frees the key only after it has been observed for ``ttl + margin``.

Safety needs quorums that intersect: ``R + W > N`` *and* no sloppy stand-ins, because a spare
node taking a down home node's place lets two sides of a partition each complete a quorum.
kv clusters whose ring holds no more nodes than the replica count have no spares; a larger
cluster must run with ``NodeConfig(spares=0)`` and be declared with
``assume_strict_quorum=True``, else operations raise ``FailedPrecondition``. It also needs
replicas that keep acknowledged writes (memory store, or Bitcask with ``always``/``batch``)
and a cluster without last-write-wins (which would hide siblings).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import xxhash

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import Conflict, FailedPrecondition, InvalidArgument, Timeout, Unavailable
from blocks.kv import Versioned
from blocks.sequencer.kvlease_core import (
    TOKEN_BYTES,
    KvLeaseRecord,
    LeaseView,
    Observations,
    claim_record,
    claimable,
    holds,
    released_record,
    renewed_record,
    resolve,
)
from blocks.sequencer.lease import WorkerLease

__all__ = ["KvLeaseConfig", "KvLeases", "KvWorkerLease", "VersionedKV"]

TOKENS_KEPT = 4
"""Tokens of a holder's recent writes it still recognises as its own (a timed-out renewal
may have landed)."""


class VersionedKV(Protocol):
    """The part of ``blocks.kv.KVClient`` the leases use."""

    replicas: int

    def members(self) -> list[str]: ...

    async def refresh(self) -> None: ...

    async def get(
        self, key: bytes | str, *, r: int | None = None, timeout_s: float | None = None
    ) -> Versioned: ...

    async def put(
        self,
        key: bytes | str,
        value: bytes,
        context: bytes | None = None,
        *,
        w: int | None = None,
        timeout_s: float | None = None,
    ) -> Versioned: ...


@dataclass(frozen=True, slots=True)
class KvLeaseConfig:
    """``ttl_ms`` of validity per confirmed write; the holder stops ``safety_margin_ms`` early
    and contenders wait ``safety_margin_ms`` longer, which absorbs clock-rate drift up to
    margin/ttl. ``quorum``: ``majority`` (R = W = N//2+1, survives a minority of replicas
    down) or ``all`` (R = W = N)."""

    workers: int = 1024
    ttl_ms: int = 10_000
    safety_margin_ms: int = 2_000
    prefix: str = "sequencer/lease/"
    quorum: Literal["majority", "all"] = "majority"
    probe_max: int = 64
    assume_strict_quorum: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.workers <= 1 << 16:
            raise InvalidArgument("workers must be in [1, 65536]")
        if not 0 <= self.safety_margin_ms < self.ttl_ms // 2:
            raise InvalidArgument("need 0 <= safety_margin_ms < ttl_ms / 2")
        if self.quorum not in ("majority", "all"):
            raise InvalidArgument("quorum must be 'majority' or 'all'")
        if not 0 < self.probe_max <= 1 << 16 or not 0 < len(self.prefix) <= 200:
            raise InvalidArgument("probe_max must be in [1, 65536], prefix 1..200 chars")

    @property
    def takeover_after_s(self) -> float:
        return (self.ttl_ms + self.safety_margin_ms) / 1000.0


class KvWorkerLease(WorkerLease):
    """A lease held in kv. ``held()`` also refuses once the wall clock nears ``until_ms``,
    the bound this holder published for its IDs; ``epoch`` is its fencing token."""

    __slots__ = ("_guard_ms", "_tokens", "epoch", "until_ms")

    def __init__(
        self,
        worker_id: int,
        record: KvLeaseRecord,
        previous_until_ms: int,
        clock: Clock,
        valid_until_s: float,
        guard_ms: int,
    ) -> None:
        super().__init__(worker_id, record.owner, previous_until_ms, clock, valid_until_s)
        self.epoch = record.epoch
        self.until_ms = record.until_ms
        self._guard_ms = guard_ms
        self._tokens: deque[bytes] = deque([record.token], maxlen=TOKENS_KEPT)

    def held(self) -> bool:
        return super().held() and self._clock.now_ms() + self._guard_ms < self.until_ms

    @property
    def tokens(self) -> tuple[bytes, ...]:
        return tuple(self._tokens)

    def remember(self, token: bytes) -> None:
        """Count ``token`` as this holder's own from now on (the last few are kept)."""
        self._tokens.append(token)

    def confirm(self, record: KvLeaseRecord, valid_until_s: float) -> None:
        """A read back showed ``record``: publish its ``until_ms`` and extend validity."""
        self.until_ms = max(self.until_ms, record.until_ms)
        self.extend(valid_until_s)


class KvLeases:
    """Worker-id leases in a kv cluster (see the module docstring for the protocol)."""

    def __init__(
        self,
        kv: VersionedKV,
        config: KvLeaseConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._kv = kv
        self.config = config or KvLeaseConfig()
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._observations = Observations()

    # -- plumbing ----------------------------------------------------------------------------

    def _key(self, worker_id: int) -> str:
        return f"{self.config.prefix}{worker_id}"

    async def _quorum(self) -> int:
        if not self._kv.members():
            await self._kv.refresh()
        replicas, members = self._kv.replicas, len(self._kv.members())
        if members > replicas and not self.config.assume_strict_quorum:
            raise FailedPrecondition(
                f"the kv cluster has {members} nodes for {replicas} replicas: sloppy quorum "
                "could let two holders in; run it with spares=0 and pass assume_strict_quorum"
            )
        return replicas if self.config.quorum == "all" else replicas // 2 + 1

    async def _read(self, worker_id: int) -> tuple[LeaseView, bytes]:
        got = await self._kv.get(self._key(worker_id), r=await self._quorum())
        return resolve(got.siblings), got.context

    async def _write(self, worker_id: int, record: KvLeaseRecord, context: bytes) -> None:
        await self._kv.put(self._key(worker_id), record.encode(), context, w=await self._quorum())

    async def _settle_conflict(self, worker_id: int, view: LeaseView, context: bytes) -> None:
        """Write the siblings' deterministic resolution back, so later readers agree."""
        if view.conflicted and view.record is not None:
            # On failure someone else will; until then every reader resolves the same way.
            with contextlib.suppress(Unavailable, Timeout):
                await self._write(worker_id, view.record, context)

    def _valid_until(self, sent_at_s: float) -> float:
        return sent_at_s + (self.config.ttl_ms - self.config.safety_margin_ms) / 1000.0

    def _probe_order(self, owner: str) -> list[int]:
        workers = self.config.workers
        start = xxhash.xxh3_64_intdigest(owner.encode()) % workers
        count = min(workers, self.config.probe_max)
        return [(start + i) % workers for i in range(count)]

    # -- holder operations -------------------------------------------------------------------

    async def try_acquire(self, owner: str) -> KvWorkerLease | None:
        """One pass over the probe order; the lease, or None if no id could be taken now."""
        if not isinstance(owner, str) or not owner:
            raise InvalidArgument("owner must be a non-empty str")
        for worker_id in self._probe_order(owner):
            try:
                lease = await self._try_claim(worker_id, owner)
            except (Unavailable, Timeout):
                continue
            if lease is not None:
                return lease
        return None

    async def _try_claim(self, worker_id: int, owner: str) -> KvWorkerLease | None:
        view, context = await self._read(worker_id)
        seen_for_s = self._observations.observe(
            worker_id, view.fingerprint, self._clock.monotonic()
        )
        if view.conflicted:
            await self._settle_conflict(worker_id, view, context)
            return None
        if not claimable(view, seen_for_s, self.config.takeover_after_s):
            return None
        token = self._rng.randbytes(TOKEN_BYTES)
        record = claim_record(view, owner, token, self._clock.now_ms(), self.config.ttl_ms)
        sent_at_s = self._clock.monotonic()
        await self._write(worker_id, record, context)
        back, back_context = await self._read(worker_id)
        self._observations.forget(worker_id)
        if not holds(back, (token,)):
            await self._settle_conflict(worker_id, back, back_context)
            return None
        previous_until_ms = view.record.until_ms if view.record is not None else 0
        return KvWorkerLease(
            worker_id,
            record,
            previous_until_ms,
            self._clock,
            self._valid_until(sent_at_s),
            self.config.safety_margin_ms,
        )

    async def acquire(self, owner: str, timeout_s: float = 60.0) -> KvWorkerLease:
        """``try_acquire`` until it succeeds; ``Unavailable`` after ``timeout_s``."""
        deadline = self._clock.monotonic() + timeout_s
        pause_s = max(0.01, self.config.safety_margin_ms / 2000.0)
        while True:
            lease = await self.try_acquire(owner)
            if lease is not None:
                return lease
            if self._clock.monotonic() + pause_s > deadline:
                raise Unavailable(f"no worker id could be leased in {timeout_s} s")
            await asyncio.sleep(pause_s)

    async def renew(self, lease: KvWorkerLease) -> None:
        """Extend ``lease``. ``Conflict`` (and the lease marked lost) when it is no longer
        this holder's; ``Unavailable``/``Timeout`` when kv did not answer (not extended)."""
        worker_id = lease.worker_id
        view, context = await self._read(worker_id)
        if not holds(view, lease.tokens) or view.record is None:
            lease.mark_lost()
            await self._settle_conflict(worker_id, view, context)
            raise Conflict(f"worker id {worker_id} is no longer leased to {lease.owner}")
        token = self._rng.randbytes(TOKEN_BYTES)
        record = renewed_record(view.record, token, self._clock.now_ms(), self.config.ttl_ms)
        lease.remember(token)  # before the put: a put that times out may still land
        sent_at_s = self._clock.monotonic()
        await self._write(worker_id, record, context)
        back, back_context = await self._read(worker_id)
        if holds(back, (token,)):
            lease.confirm(record, self._valid_until(sent_at_s))
            return
        if holds(back, lease.tokens):
            raise Unavailable(f"renewal of worker id {worker_id} not visible yet")
        lease.mark_lost()
        await self._settle_conflict(worker_id, back, back_context)
        raise Conflict(f"worker id {worker_id} was taken from {lease.owner} during renewal")

    async def release(self, lease: KvWorkerLease, issued_below_ms: int | None = None) -> bool:
        """Stop using ``lease`` and free its id at once; True if the release was written.

        ``issued_below_ms`` (one past the holder's last ID timestamp) lets the next holder
        start sooner than the published ``until_ms``."""
        lease.mark_lost()
        view, context = await self._read(lease.worker_id)
        if not holds(view, lease.tokens) or view.record is None:
            return False
        token = self._rng.randbytes(TOKEN_BYTES)
        await self._write(
            lease.worker_id, released_record(view.record, token, issued_below_ms), context
        )
        return True

    async def keep(
        self,
        lease: KvWorkerLease,
        on_lost: Callable[[BaseException | None], Awaitable[None]] | None = None,
    ) -> None:
        """Renew every third of the TTL until the lease is lost or runs out, then return."""
        interval_s = self.config.ttl_ms / 3000.0
        reason: BaseException | None = None
        while lease.held():
            await asyncio.sleep(interval_s)
            try:
                await self.renew(lease)
            except Conflict as error:
                reason = error
                break
            except (Unavailable, Timeout) as error:
                reason = error  # try again next round; validity runs out meanwhile
        lease.mark_lost()
        if on_lost is not None:
            await on_lost(reason)
