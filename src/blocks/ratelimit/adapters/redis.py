"""``RedisTokenBucket`` and ``RedisGCRA``: the ``blocks.ratelimit`` API with the limit's state
in Redis, so every process that talks to one server shares one limit.

Theory of operation
-------------------
Each algorithm is one Lua script, so a decision (read the state, decide, write the state)
is atomic on the server whatever other clients do: no lock, no retry loop, one round trip.
The scripts are ``TokenBucket`` and ``GCRA`` from ``blocks.ratelimit.bucket`` written again
in Lua, on microseconds, with the same tolerance (``EPSILON``); the GCRA one is the algorithm
of the redis-cell module (one theoretical arrival time per key), without the module. The
script returns the raw quantities (tokens or headroom, wait, time to full) as exact decimal
strings and the rounding to a ``Decision`` happens here, with the same ``ceil_ms``, so a
Redis limiter decides exactly as the in-process one given the same times.

Time: by default the script reads the server's clock (``TIME``), so every client of the
server decides on one clock: client clocks that disagree cannot hand out a second burst,
and ``retry_after_ms`` is honest for every client (waiting it on any clock is at least as
long as on the server's). The server's clock is its wall clock: a step back of it delays
admissions (never admits more), a step forward admits early. Given a ``clock``, the adapter
sends ``clock.monotonic()`` instead: the contract drives time that way, and so can a user
whose clients share a clock; clients whose clocks disagree then break the promise
(tests/adapters/test_redis_ratelimit.py shows both).

State is one key per limited key, ``<ns>gcra:<key>`` (a decimal string) or
``<ns>bucket:<key>`` (a hash of tokens and time), written only when a request is admitted,
with a ``PEXPIRE`` at the moment the key is back at its full allowance: forgetting it then
loses nothing, which is how the number of tracked keys stays bounded (the in-process
``keys_max``). With an injected clock the expiry, which runs on the server's clock, gets
``expiry_slack_ms`` more, since the two clocks need not move together; an injected clock
that lags the server's by more than that forgets a key early (admits a burst too many).
A server out of memory (``maxmemory`` with ``noeviction``) refuses with ``Overloaded``.

Limiters of different rates must not share a namespace (they would read each other's
state). Errors are the block's own (``blocks.core.rediscall``).

``RedisWindowStore`` is the other way onto Redis: the ``WindowStore`` of
``blocks.ratelimit.distributed``, so ``DistributedLimiter`` (sliding window counter, exact or
batched) shares its window counts through one server. Its ``add`` is one Lua script doing
what ``MemoryWindowStore.add`` does to a hash ``<ns>window:<key>`` (window, count,
previous), atomic against every other process; an entry expires ``entry_ttl_ms`` after its
last add on the server's clock (it is useless two windows after its last add, so that
must be at least two windows plus the skew between the hosts' clocks and the server's).
"""

from __future__ import annotations

import math
from typing import Any, Self, cast

import redis

from blocks.core.clock import Clock
from blocks.core.errors import InvalidArgument
from blocks.core.rediscall import RedisScript, redis_call
from blocks.ratelimit.api import KEY_BYTES_MAX, Decision
from blocks.ratelimit.base import EPSILON, ceil_ms, check_positive

__all__ = [
    "ENTRY_TTL_MS",
    "EXPIRY_SLACK_MS",
    "PROPERTIES",
    "RedisGCRA",
    "RedisTokenBucket",
    "RedisWindowStore",
]

PROPERTIES = frozenset({"promise", "honest retry_after", "liveness", "decision sanity"})
"""The ``RateLimiterContract`` properties these limiters give: all of them."""

EXPIRY_SLACK_MS = 60_000
"""Default extra lifetime of a key when time comes from an injected clock."""
MICROS = 1_000_000
ENTRY_TTL_MS = 600_000
"""Default lifetime of a ``RedisWindowStore`` entry after its last add."""

# Shared head of both scripts: ARGV[1] is the injected now in microseconds, or '' for the
# server's TIME; ARGV[2] the expiry slack in milliseconds.
_NOW = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local slack = tonumber(ARGV[2])
local eps = 1e-6
local function exact(x) return string.format('%.17g', x) end
local function expire_ms(us) return math.max(1, math.ceil(us / 1000) + 1 + slack) end
"""

# ARGV[3] interval_us, ARGV[4] tolerance_us, ARGV[5] cost.
# Returns {allowed, tat - now, retry_us}.
_GCRA = (
    _NOW
    + """
local interval = tonumber(ARGV[3])
local tolerance = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local candidate = tat + interval * cost
local allowed = 0
local retry = 0
if candidate - now <= tolerance + eps then
  allowed = 1
  tat = candidate
  redis.call('SET', KEYS[1], exact(tat), 'PX', expire_ms(tat - now))
else
  retry = candidate - now - tolerance
end
return {allowed, exact(tat - now), exact(retry)}
"""
)

# ARGV[3] rate per second, ARGV[4] burst, ARGV[5] cost.
# Returns {allowed, tokens, retry_us, reset_us}.
_BUCKET = (
    _NOW
    + """
local rate = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = burst
if state[1] then
  local earned = math.max(0, now - tonumber(state[2])) * rate / 1000000
  tokens = math.min(burst, tonumber(state[1]) + earned)
end
local allowed = 0
local retry = 0
if tokens + eps >= cost then
  allowed = 1
  tokens = math.max(0, tokens - cost)
else
  retry = (cost - tokens) * 1000000 / rate
end
local reset = (burst - tokens) * 1000000 / rate
if allowed == 1 then
  redis.call('HSET', KEYS[1], 'tokens', exact(tokens), 'at', exact(now))
  redis.call('PEXPIRE', KEYS[1], expire_ms(reset))
end
return {allowed, exact(tokens), exact(retry), exact(reset)}
"""
)


class _RedisLimiter:
    """Validation, time and the script call shared by both algorithms."""

    _kind = ""
    _source = ""

    def __init__(
        self,
        client: redis.Redis,
        rate_per_s: float,
        burst: int,
        *,
        namespace: str = "",
        clock: Clock | None = None,
        expiry_slack_ms: int = EXPIRY_SLACK_MS,
    ) -> None:
        check_positive("rate_per_s", rate_per_s)
        check_positive("burst", burst, integer=True)
        if isinstance(expiry_slack_ms, bool) or not isinstance(expiry_slack_ms, int):
            raise InvalidArgument("expiry_slack_ms must be an int")
        if not 0 <= expiry_slack_ms <= 86_400_000:
            raise InvalidArgument("expiry_slack_ms must be in [0, 86400000]")
        if not isinstance(namespace, str):
            raise InvalidArgument("namespace must be a str")
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self._client = client
        self._namespace = namespace
        self._clock = clock
        self._slack_ms = expiry_slack_ms if clock is not None else 0
        self._script = RedisScript(client, self._source)

    @classmethod
    def open(
        cls,
        url: str,
        rate_per_s: float,
        burst: int,
        *,
        timeout_s: float = 10.0,
        **options: Any,
    ) -> Self:
        """Connect to ``url`` (``redis://host:port/db``); ``options`` go to ``__init__``."""
        client = redis.Redis.from_url(url, socket_timeout=timeout_s)
        return cls(client, rate_per_s, burst, **options)

    @property
    def capacity(self) -> int:
        """The largest cost one request may have: ``burst``."""
        return self.burst

    def close(self) -> None:
        """Release the connections; the state stays on the server until it expires."""
        with redis_call("close"):
            self._client.close()

    def _check(self, key: str, cost: int) -> None:
        if not isinstance(key, str) or not key or len(key.encode()) > KEY_BYTES_MAX:
            raise InvalidArgument(f"key must be a non-empty str of at most {KEY_BYTES_MAX} bytes")
        if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= self.burst:
            raise InvalidArgument(f"cost must be an int in [1, {self.burst}], got {cost!r}")

    def _run(self, key: str, parameters: list[Any]) -> list[Any]:
        now = "" if self._clock is None else str(round(self._clock.monotonic() * MICROS))
        with redis_call("acquire"):
            reply = self._script(
                keys=[f"{self._namespace}{self._kind}:{key}"],
                args=[now, self._slack_ms, *parameters],
            )
        return cast("list[Any]", reply)


class RedisGCRA(_RedisLimiter):
    """GCRA with the theoretical arrival time in Redis: the promise of ``GCRA``.

    ``acquire`` is one script call; see the module docs for time, expiry and errors.
    """

    _kind = "gcra"
    _source = _GCRA

    def __init__(self, client: redis.Redis, rate_per_s: float, burst: int, **options: Any) -> None:
        super().__init__(client, rate_per_s, burst, **options)
        self._interval_us = MICROS / self.rate_per_s
        self._tolerance_us = self._interval_us * burst

    def acquire(self, key: str, cost: int = 1) -> Decision:
        """Admit or refuse ``cost`` units for ``key``, atomically on the server."""
        self._check(key, cost)
        allowed, ahead, retry = self._run(
            key, [repr(self._interval_us), repr(self._tolerance_us), cost]
        )
        ahead_us, retry_us = float(ahead), float(retry)
        headroom_us = self._tolerance_us - ahead_us
        return Decision(
            allowed=allowed == 1,
            remaining=max(0, math.floor(headroom_us / self._interval_us + EPSILON)),
            retry_after_ms=ceil_ms(retry_us) if allowed != 1 else 0,
            reset_ms=ceil_ms(ahead_us),
        )


class RedisTokenBucket(_RedisLimiter):
    """Token bucket with ``(tokens, time)`` in a Redis hash: the promise of ``TokenBucket``.

    ``acquire`` is one script call; see the module docs for time, expiry and errors.
    """

    _kind = "bucket"
    _source = _BUCKET

    def acquire(self, key: str, cost: int = 1) -> Decision:
        """Admit or refuse ``cost`` units for ``key``, atomically on the server."""
        self._check(key, cost)
        allowed, tokens, retry, reset = self._run(key, [repr(self.rate_per_s), self.burst, cost])
        return Decision(
            allowed=allowed == 1,
            remaining=math.floor(float(tokens) + EPSILON),
            retry_after_ms=ceil_ms(float(retry)) if allowed != 1 else 0,
            reset_ms=ceil_ms(float(reset)),
        )


# KEYS[1] the entry; ARGV: window, delta, ttl_ms. Returns {count of window, of window - 1}:
# ``distributed._rolled_add`` on a hash of w (window), c (count) and p (previous count).
_WINDOW_ADD = """
local window = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w, c, p = window, 0, 0
if state[1] then w, c, p = tonumber(state[1]), tonumber(state[2]), tonumber(state[3]) end
local first, second
if window == w then
  c = c + delta
  first, second = c, p
elseif window == w + 1 then
  w, c, p = window, delta, c
  first, second = c, p
elseif window > w + 1 then
  w, c, p = window, delta, 0
  first, second = c, p
elseif window == w - 1 then
  p = p + delta
  first, second = p, 0
else
  return {0, 0}
end
redis.call('HSET', KEYS[1], 'w', w, 'c', c, 'p', p)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {first, second}
"""


class RedisWindowStore:
    """A ``WindowStore`` on Redis for ``DistributedLimiter``; see the module docs."""

    def __init__(
        self, client: redis.Redis, *, namespace: str = "", entry_ttl_ms: int = ENTRY_TTL_MS
    ) -> None:
        if isinstance(entry_ttl_ms, bool) or not isinstance(entry_ttl_ms, int):
            raise InvalidArgument("entry_ttl_ms must be an int")
        if not 1 <= entry_ttl_ms <= 86_400_000 * 7:
            raise InvalidArgument("entry_ttl_ms must be in [1, 604800000]")
        if not isinstance(namespace, str):
            raise InvalidArgument("namespace must be a str")
        self._client = client
        self._namespace = namespace
        self._ttl_ms = entry_ttl_ms
        self._script = RedisScript(client, _WINDOW_ADD)

    @classmethod
    def open(cls, url: str, *, timeout_s: float = 10.0, **options: Any) -> RedisWindowStore:
        """Connect to ``url`` (``redis://host:port/db``); ``options`` go to ``__init__``."""
        client = redis.Redis.from_url(url, socket_timeout=timeout_s)
        return cls(client, **options)

    def close(self) -> None:
        """Release the connections; the entries stay until they expire."""
        with redis_call("close"):
            self._client.close()

    def add(self, key: str, window: int, delta: int) -> tuple[int, int]:
        """Atomically add ``delta`` to ``key``'s count for ``window`` and return ``(count of
        window, count of window - 1)``, as ``MemoryWindowStore.add`` does."""
        if not isinstance(key, str) or not key or len(key.encode()) > KEY_BYTES_MAX:
            raise InvalidArgument(f"key must be a non-empty str of at most {KEY_BYTES_MAX} bytes")
        for name, value in (("window", window), ("delta", delta)):
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 1 << 52:
                raise InvalidArgument(f"{name} must be an int of magnitude < 2**52")
        with redis_call("window add"):
            reply = self._script(
                keys=[f"{self._namespace}window:{key}"], args=[window, delta, self._ttl_ms]
            )
        count, previous = cast("list[int]", reply)
        return int(count), int(previous)
