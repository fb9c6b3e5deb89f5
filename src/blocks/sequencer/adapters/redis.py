"""``RedisSnowflake``: Snowflake IDs on a worker id leased from Redis (standalone or cluster).

Theory of operation
-------------------
The leases are ``blocks.sequencer.adapters.redis_leases`` (re-exported here): one Lua
script each to acquire (``SET NX PX`` plus an ``INCR``-ed fencing token), renew and release
(both compare the holder's token first), and a published ``until_ms`` bound per worker id.

``RedisSnowflake`` is an ``IdGenerator``: the sequencer's own ``Snowflake`` over a leased
worker id. Before each call it renews the lease in line when half its validity is gone (no
thread); if the lease was lost it leases a worker id again (perhaps another) and starts a
new ``Snowflake`` above both the previous holder's ``until_ms`` and its own last ID, so its
IDs keep increasing (when the new grant's fence is the old one's plus one, nobody held the
id in between, and its own last ID is the only bound). Errors: those of the leases; no free
worker id is ``Unavailable``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import Conflict, InvalidArgument, Timeout, Unavailable
from blocks.sequencer.adapters.redis_leases import RedisLeaseConfig, RedisLeases, RedisWorkerLease
from blocks.sequencer.snowflake import DEFAULT_EPOCH_MS, Layout, Snowflake, decode, nap

__all__ = [
    "PROPERTIES",
    "RedisLeaseConfig",
    "RedisLeases",
    "RedisSnowflake",
    "RedisWorkerLease",
]

PROPERTIES = frozenset({"strictly increasing", "exact batch size", "recovery after clock jumps"})
"""The ``SequencerContract`` properties ``RedisSnowflake`` gives (all of them)."""


class RedisSnowflake:
    """An ``IdGenerator`` of Snowflake IDs on a worker id leased from Redis. One thread at a
    time; ``close()`` releases the lease."""

    def __init__(
        self,
        leases: RedisLeases,
        owner: str,
        *,
        clock: Clock | None = None,
        layout: Layout | None = None,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        backwards_wait_max_ms: int = 50,
        sleep: Callable[[float], None] = nap,
        acquire_timeout_s: float = 0.0,
    ) -> None:
        self._leases = leases
        self._owner = owner
        self._clock: Clock = clock or SystemClock()
        self._layout = layout or Layout()
        if self._layout.workers < leases.config.workers:
            raise InvalidArgument("the layout holds fewer worker ids than the lease table")
        self._epoch_ms = epoch_ms
        self._backwards_wait_max_ms = backwards_wait_max_ms
        self._sleep = sleep
        self._last_id: int | None = None
        self._lease: RedisWorkerLease | None = None
        self._generator: Snowflake | None = None
        self._take_lease(acquire_timeout_s)

    @classmethod
    def open(
        cls, url: str, owner: str, config: RedisLeaseConfig | None = None, **options: Any
    ) -> RedisSnowflake:
        """Lease a worker id from the Redis at ``url`` for ``owner`` and start generating;
        ``options`` are ``clock``, ``layout``, ``epoch_ms``, ``backwards_wait_max_ms``,
        ``sleep``, ``acquire_timeout_s`` (how long to wait for a free worker id, polling
        on the real clock; 0, the default, tries once) and ``cluster`` (``url`` is a node
        of a Redis Cluster). ``Unavailable`` when none is free."""
        cluster = bool(options.pop("cluster", False))
        leases = RedisLeases.open(url, config, clock=options.get("clock"), cluster=cluster)
        try:
            return cls(leases, owner, **options)
        except BaseException:
            leases.close()
            raise

    @property
    def lease(self) -> RedisWorkerLease:
        assert self._lease is not None
        return self._lease

    @property
    def worker_id(self) -> int:
        return self.lease.worker_id

    def next_id(self) -> int:
        generator = self._ready()
        value = generator.next_id()
        self._last_id = value
        return value

    def next_ids(self, n: int) -> Sequence[int]:
        generator = self._ready()
        ids = generator.next_ids(n)
        if ids:
            self._last_id = ids[-1]
        return ids

    def close(self) -> None:
        """Release the lease (its id is free at once) and disconnect; idempotent."""
        lease, self._lease, self._generator = self._lease, None, None
        if lease is not None and not lease.lost:
            # On failure the key expires on its own after ttl.
            with contextlib.suppress(Unavailable, Timeout):
                self._leases.release(lease, self._issued_below_ms(lease))
        self._leases.close()

    # -- the lease ---------------------------------------------------------------------------

    def _issued_below_ms(self, lease: RedisWorkerLease) -> int:
        last_ms = lease.previous_expires_at_ms
        if self._last_id is not None:
            last_ms = max(last_ms, self._decode_ms(self._last_id))
        return last_ms + 1

    def _decode_ms(self, snowflake_id: int) -> int:
        return decode(snowflake_id, layout=self._layout, epoch_ms=self._epoch_ms).unix_ms

    def _take_lease(self, timeout_s: float = 0.0) -> None:
        if timeout_s > 0:
            lease: RedisWorkerLease | None = self._leases.acquire(self._owner, timeout_s)
        else:
            lease = self._leases.try_acquire(self._owner)
        if lease is None:
            raise Unavailable(f"no free worker id among {self._leases.config.probe_max} probed")
        floor_ms = self._floor_ms(self._lease, lease)
        self._lease = lease
        self._generator = Snowflake(
            lease.worker_id,
            epoch_ms=self._epoch_ms,
            clock=self._clock,
            layout=self._layout,
            backwards_wait_max_ms=self._backwards_wait_max_ms,
            min_timestamp_ms=floor_ms,
            sleep=self._sleep,
            lease=lease,
        )

    def _floor_ms(self, old: RedisWorkerLease | None, new: RedisWorkerLease) -> int:
        """The millisecond the new lease's IDs must start after: the previous holder's
        bound, and our own last ID. When the new grant directly follows our old one of the
        same worker id (fence + 1), nobody held it in between: the previous bound is ours,
        and our last ID is the tighter one (no wait for our own ``until_ms``)."""
        own_ms = 0 if self._last_id is None else self._decode_ms(self._last_id)
        if old is not None and new.worker_id == old.worker_id and new.fence == old.fence + 1:
            return max(own_ms, old.previous_expires_at_ms)
        return max(own_ms, new.previous_expires_at_ms)

    def _ready(self) -> Snowflake:
        """The generator, its lease renewed first when half its validity is gone."""
        lease, generator = self._lease, self._generator
        if lease is None or generator is None:
            raise Unavailable("the generator is closed")
        config = self._leases.config
        half_s = (config.ttl_ms - config.safety_margin_ms) / 2000.0
        near_until = self._clock.now_ms() + config.ttl_ms // 2 >= lease.until_ms
        if not lease.lost and (lease.remaining_s() < half_s or near_until):
            try:
                self._leases.renew(lease)
            except Conflict:
                pass  # marked lost: lease again below
            except (Unavailable, Timeout):
                if not lease.held():
                    raise
        if lease.lost:
            self._take_lease()
            assert self._generator is not None
            return self._generator
        return generator
