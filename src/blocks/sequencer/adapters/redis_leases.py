"""Worker-id leases on Redis: ``RedisLeases``, ``RedisWorkerLease``, ``RedisLeaseConfig``.

Theory of operation
-------------------
Each worker id ``w`` has three keys, all with the hash tag ``{w<w>}`` so they share one
cluster slot and one Lua script may touch them together:

* ``<ns>{w<w>}:lease``: the holder's random token, written ``SET NX PX ttl``: it exists
  only while leased, and Redis expires it on the *server's* clock;
* ``<ns>{w<w>}:fence``: the fencing counter, ``INCR``-ed in the same script that takes the
  lease, so every grant of ``w`` gets a larger fence than every earlier one: a resource that
  remembers the largest fence it has seen refuses a holder that was replaced;
* ``<ns>{w<w>}:until``: a wall-clock bound the holders' IDs stay below. It only grows
  (each grant and renewal raise it to ``now + ttl``), except that a release by the holder
  lowers it to where its IDs really stopped. The next holder passes it to
  ``Snowflake(min_timestamp_ms=...)``, so two holders of ``w`` never share a millisecond
  even when their wall clocks disagree.

Acquire, renew and release are one Lua script each; renew and release act only while the
lease key still holds the caller's token (compare, then ``PEXPIRE`` or ``DEL``). The holder
side is ``RedisWorkerLease``: like every ``WorkerLease`` it counts validity on its own
*monotonic* clock from before it asked, minus ``safety_margin_ms``, so it believes it holds
the lease for less time than Redis keeps the key; it also stops ``safety_margin_ms`` before
its published ``until_ms``. Errors: Redis failures become the library's errors
(``blocks.core.rediscall``, and a cluster client's own failures ``Unavailable``); a renewal
refused because another holder has the id is ``Conflict`` (and the lease is marked lost).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.cluster
import redis.exceptions
import xxhash

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import Conflict, InvalidArgument, Unavailable
from blocks.core.rediscall import RedisScript, connect_redis, redis_cluster_call
from blocks.sequencer.lease import WorkerLease

__all__ = ["RedisLeaseConfig", "RedisLeases", "RedisWorkerLease"]

TOKEN_BYTES = 16
TIMEOUT_S_DEFAULT = 10.0
ACQUIRE_PAUSE_S_MAX = 0.2
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")

# KEYS: lease, fence, until. ARGV: token, ttl_ms, until_ms. {fence, previous until} or nil.
_ACQUIRE_SCRIPT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local fence = redis.call('INCR', KEYS[2])
local previous = redis.call('GET', KEYS[3]) or '0'
if tonumber(ARGV[3]) > tonumber(previous) then redis.call('SET', KEYS[3], ARGV[3]) end
return {fence, previous}
"""

# KEYS: lease, until. ARGV: token, ttl_ms, until_ms. 1 if renewed, 0 if not ours.
_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local current = redis.call('GET', KEYS[2]) or '0'
if tonumber(ARGV[3]) > tonumber(current) then redis.call('SET', KEYS[2], ARGV[3]) end
return 1
"""

# KEYS: lease, until. ARGV: token, issued_below_ms ('' = keep until). 1 if released.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""


@dataclass(frozen=True, slots=True)
class RedisLeaseConfig:
    """``ttl_ms``: how long Redis keeps a lease key after each grant or renewal; the holder
    stops ``safety_margin_ms`` earlier (absorbing clock-rate drift up to margin/ttl and the
    request's time in flight). ``probe_max``: worker ids tried per acquire pass."""

    workers: int = 1024
    ttl_ms: int = 10_000
    safety_margin_ms: int = 2_000
    namespace: str = "blocks:sequencer:"
    probe_max: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.workers <= 1 << 16:
            raise InvalidArgument("workers must be in [1, 65536]")
        if not 0 < self.ttl_ms <= 86_400_000 or not 0 <= self.safety_margin_ms < self.ttl_ms // 2:
            raise InvalidArgument("need 0 < ttl_ms <= 1 day and 0 <= safety_margin_ms < ttl/2")
        if not 0 < self.probe_max <= 1 << 16:
            raise InvalidArgument("probe_max must be in [1, 65536]")
        if not NAMESPACE_PATTERN.fullmatch(self.namespace):
            raise InvalidArgument(f"namespace must match {NAMESPACE_PATTERN.pattern}")


class RedisWorkerLease(WorkerLease):
    """A lease held in Redis: ``token`` proves it is ours, ``fence`` orders it among every
    grant of the worker id, ``until_ms`` is the bound this holder's IDs stay below."""

    __slots__ = ("_guard_ms", "fence", "token", "until_ms")

    def __init__(
        self,
        worker_id: int,
        owner: str,
        *,
        token: bytes,
        fence: int,
        previous_until_ms: int,
        until_ms: int,
        clock: Clock,
        valid_until_s: float,
        guard_ms: int,
    ) -> None:
        super().__init__(worker_id, owner, previous_until_ms, clock, valid_until_s)
        self.token = token
        self.fence = fence
        self.until_ms = until_ms
        self._guard_ms = guard_ms

    def held(self) -> bool:
        return super().held() and self._clock.now_ms() + self._guard_ms < self.until_ms

    @property
    def lost(self) -> bool:
        return self._lost

    def remaining_s(self) -> float:
        """Validity left on the holder's monotonic clock (negative once run out)."""
        return self._valid_until_s - self._clock.monotonic()


class RedisLeases:
    """Worker-id leases in one Redis (see the module docs); build it with ``open``."""

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        config: RedisLeaseConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or RedisLeaseConfig()
        self._client = client
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.SystemRandom()
        self._sleep = sleep
        self._acquire = RedisScript(client, _ACQUIRE_SCRIPT)
        self._renew = RedisScript(client, _RENEW_SCRIPT)
        self._release = RedisScript(client, _RELEASE_SCRIPT)

    @classmethod
    def open(
        cls,
        url: str,
        config: RedisLeaseConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        cluster: bool = False,
    ) -> RedisLeases:
        """Connect to ``url`` (with ``cluster=True``, any node of a Redis Cluster); no
        command is retried on its own (a lost reply is an error)."""
        client = connect_redis(url, timeout_s=timeout_s, cluster=cluster)
        return cls(client, config, clock=clock, rng=rng)

    def close(self) -> None:
        with redis_cluster_call("close"):
            self._client.close()

    # -- keys --------------------------------------------------------------------------------

    def _keys(self, worker_id: int, *names: str) -> list[str]:
        return [f"{self.config.namespace}{{w{worker_id}}}:{name}" for name in names]

    def _probe_order(self, owner: str) -> list[int]:
        workers = self.config.workers
        start = xxhash.xxh3_64_intdigest(owner.encode()) % workers
        return [(start + i) % workers for i in range(min(workers, self.config.probe_max))]

    def _valid_until(self, asked_at_s: float) -> float:
        return asked_at_s + (self.config.ttl_ms - self.config.safety_margin_ms) / 1000.0

    # -- holder operations -------------------------------------------------------------------

    def try_acquire(self, owner: str) -> RedisWorkerLease | None:
        """One pass over the probe order: the first free worker id, or ``None``."""
        if not isinstance(owner, str) or not owner:
            raise InvalidArgument("owner must be a non-empty str")
        ttl_ms = self.config.ttl_ms
        for worker_id in self._probe_order(owner):
            token = self._rng.randbytes(TOKEN_BYTES)
            asked_at_s = self._clock.monotonic()
            until_ms = self._clock.now_ms() + ttl_ms
            keys = self._keys(worker_id, "lease", "fence", "until")
            with redis_cluster_call("acquire"):
                granted = self._acquire(keys=keys, args=[token, ttl_ms, until_ms])
            if granted:
                fence, previous = cast("list[Any]", granted)
                return RedisWorkerLease(
                    worker_id,
                    owner,
                    token=token,
                    fence=int(fence),
                    previous_until_ms=int(previous),
                    until_ms=until_ms,
                    clock=self._clock,
                    valid_until_s=self._valid_until(asked_at_s),
                    guard_ms=self.config.safety_margin_ms,
                )
        return None

    def acquire(self, owner: str, timeout_s: float = 60.0) -> RedisWorkerLease:
        """``try_acquire`` until it succeeds; ``Unavailable`` after ``timeout_s`` (on the
        injected clock) or after ``timeout_s / pause`` passes, whichever comes first, so a
        clock that does not move cannot make it wait forever."""
        deadline = self._clock.monotonic() + timeout_s
        pause_s = min(ACQUIRE_PAUSE_S_MAX, self.config.ttl_ms / 10_000.0)
        for _ in range(math.ceil(timeout_s / pause_s) + 1):
            lease = self.try_acquire(owner)
            if lease is not None:
                return lease
            if self._clock.monotonic() + pause_s > deadline:
                break
            self._sleep(pause_s)
        raise Unavailable(f"no worker id could be leased in {timeout_s} s")

    def renew(self, lease: RedisWorkerLease) -> None:
        """Extend ``lease``: ``Conflict`` (and the lease marked lost) when its key no longer
        holds its token; ``Unavailable``/``Timeout`` when Redis did not answer."""
        asked_at_s = self._clock.monotonic()
        until_ms = self._clock.now_ms() + self.config.ttl_ms
        keys = self._keys(lease.worker_id, "lease", "until")
        with redis_cluster_call("renew"):
            renewed = self._renew(keys=keys, args=[lease.token, self.config.ttl_ms, until_ms])
        if not renewed:
            lease.mark_lost()
            raise Conflict(f"worker id {lease.worker_id} is no longer leased to {lease.owner}")
        lease.until_ms = max(lease.until_ms, until_ms)
        lease.extend(self._valid_until(asked_at_s))

    def release(self, lease: RedisWorkerLease, issued_below_ms: int | None = None) -> bool:
        """Stop using ``lease`` and free its id now; True if it was still ours.
        ``issued_below_ms`` (one past the last ID's timestamp) lets the next holder start
        there rather than at ``until_ms``."""
        lease.mark_lost()
        below = "" if issued_below_ms is None else str(min(issued_below_ms, lease.until_ms))
        keys = self._keys(lease.worker_id, "lease", "until")
        with redis_cluster_call("release"):
            return bool(self._release(keys=keys, args=[lease.token, below]))

    def current_fence(self, worker_id: int) -> int:
        """The fence of the latest grant of ``worker_id`` (0 if never leased)."""
        with redis_cluster_call("current_fence"):
            value = self._client.get(self._keys(worker_id, "fence")[0])
        return int(cast("bytes | None", value) or 0)
