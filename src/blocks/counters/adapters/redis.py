"""``RedisCounters``: the ``blocks.counters`` API on Redis (standalone).

Theory of operation
-------------------
Every key lives under the adapter's ``namespace`` prefix, so several prototypes (or test
runs) share one server:

* a counter ``n`` is the string key ``<ns>counter:n``, raised by ``INCRBY``; Redis applies
  each ``INCRBY`` once, atomically, and (with an append-only file fsynced per write) keeps it
  across a restart, so the ``Counters`` contract's exact sums hold with nothing to settle;
* a distinct count ``n`` is a Redis HyperLogLog ``<ns>distinct:n`` (``PFADD``/``PFCOUNT``:
  Redis's own 16,384 registers, standard error 0.81 %);
* a heavy-hitter tracker ``n`` is a Count-Min sketch in the hash ``<ns>cms:n`` (field
  ``"<row>:<column>"``, plus ``total`` and ``shape``) and its top-k candidates in the sorted
  set ``<ns>topk:n`` (score: the item's estimate when last offered). The columns are the
  same as ``CountMinSketch``'s (xxh3-128 double hashing with the same seed), computed here on
  the client; one Lua script adds a batch of items to the rows and offers each to the sorted
  set exactly as ``TopK`` does (a candidate stays; a newcomer replaces the weakest only with a
  larger estimate), so a batch is atomic against every other client.

Bounds are kept on the server, in the same scripts: the names of each kind are a set
(``<ns>names:counter``, ...) of at most ``COUNTERS_MAX`` counters and ``SKETCHES_MAX``
sketches of each other kind; a new name past it raises ``Overloaded`` and changes nothing.
A batch is at most ``ITEMS_PER_CALL_MAX`` items. A script touches several keys, so the
adapter is for a standalone Redis (or one whose keys of a namespace share a slot), not for a
Redis Cluster spread over slots.

Errors are the block's own (``blocks.core.rediscall``): a server down is ``Unavailable``, no
answer in time ``Timeout``, an amount that would take a counter past 64 bits
``InvalidArgument``; redis-py's exceptions never escape.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import redis
import xxhash

from blocks.core.errors import InvalidArgument
from blocks.core.rediscall import RedisScript, redis_call
from blocks.counters.api import COUNTERS_MAX
from blocks.counters.countmin import TOP_K_MAX, check_shape, item_bytes
from blocks.counters.local import check_amount, check_name
from blocks.counters.sketchstate import SKETCHES_MAX

__all__ = ["ITEMS_PER_CALL_MAX", "PROPERTIES", "RedisCounters"]

PROPERTIES = frozenset({"exact sums after settling", "bad input"})
"""The ``CountersContract`` properties Redis gives: all of them (nothing to settle)."""

ITEMS_PER_CALL_MAX = 10_000
"""Most items in one ``add_distinct``/``add_frequent`` call (one script's arguments)."""
CMS_CELLS_MAX = 1 << 20
"""Most cells of one Redis Count-Min sketch (``width * depth``): hash fields are not free."""
_MASK_64 = (1 << 64) - 1

# An unknown name is admitted only while its kind has room; a known one always is. The
# write that may fail (INCRBY past 64 bits) runs before the name is recorded, so a failure
# changes nothing.
_ADMIT = """
local function admit(names, name, most)
  if redis.call('SISMEMBER', names, name) == 1 then return true end
  return redis.call('SCARD', names) < tonumber(most)
end
"""

# Two commands for a known name (``SADD`` answers 0, then ``INCRBY``, whose reply is the
# value): the ``SADD`` is the admission check. A new name past the bound is removed again,
# and so is a new name whose ``INCRBY`` failed (past 64 bits), so a failure changes nothing.
# Lua numbers are doubles: a value past 2^53 is read back as the server's exact string.
_INCREMENT = """
local added = redis.call('SADD', KEYS[2], ARGV[1])
if added == 1 and redis.call('SCARD', KEYS[2]) > tonumber(ARGV[3]) then
  redis.call('SREM', KEYS[2], ARGV[1])
  return redis.error_reply('BLOCKS_OVERLOADED at most ' .. ARGV[3] .. ' counters')
end
local value = redis.pcall('INCRBY', KEYS[1], ARGV[2])
if type(value) == 'table' then
  if added == 1 then redis.call('SREM', KEYS[2], ARGV[1]) end
  return value
end
if value > 9007199254740991 or value < -9007199254740991 then
  return redis.call('GET', KEYS[1])
end
return value
"""

_ADD_DISTINCT = (
    _ADMIT
    + """
if not admit(KEYS[2], ARGV[1], ARGV[2]) then
  return redis.error_reply('BLOCKS_OVERLOADED at most ' .. ARGV[2] .. ' distinct counts')
end
redis.call('SADD', KEYS[2], ARGV[1])
local chunk = 500
for first = 3, #ARGV, chunk do
  redis.call('PFADD', KEYS[1], unpack(ARGV, first, math.min(first + chunk - 1, #ARGV)))
end
if #ARGV < 3 then redis.call('PFADD', KEYS[1]) end
return redis.call('PFCOUNT', KEYS[1])
"""
)

# KEYS: cms hash, top-k set, names set. ARGV: name, names max, k, depth, shape, then per
# item: the item and its ``depth`` columns.
_ADD_FREQUENT = (
    _ADMIT
    + """
if not admit(KEYS[3], ARGV[1], ARGV[2]) then
  return redis.error_reply('BLOCKS_OVERLOADED at most ' .. ARGV[2] .. ' heavy-hitter sketches')
end
redis.call('HSETNX', KEYS[1], 'shape', ARGV[5])
local shape = redis.call('HGET', KEYS[1], 'shape')
if shape ~= ARGV[5] then
  return redis.error_reply('BLOCKS_INVALID sketch shape ' .. shape .. ' here, not ' .. ARGV[5])
end
redis.call('SADD', KEYS[3], ARGV[1])
local k = tonumber(ARGV[3])
local depth = tonumber(ARGV[4])
local added = 0
local i = 6
while i <= #ARGV do
  local item = ARGV[i]
  local estimate = nil
  for row = 0, depth - 1 do
    local cell = redis.call('HINCRBY', KEYS[1], row .. ':' .. ARGV[i + 1 + row], 1)
    if estimate == nil or cell < estimate then estimate = cell end
  end
  if redis.call('ZSCORE', KEYS[2], item) or redis.call('ZCARD', KEYS[2]) < k then
    redis.call('ZADD', KEYS[2], estimate, item)
  else
    local weakest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    if estimate > tonumber(weakest[2]) then
      redis.call('ZREM', KEYS[2], weakest[1])
      redis.call('ZADD', KEYS[2], estimate, item)
    end
  end
  added = added + 1
  i = i + 1 + depth
end
redis.call('HINCRBY', KEYS[1], 'total', added)
return redis.call('HGET', KEYS[1], 'total')
"""
)


def _items(items: Iterable[bytes | str]) -> list[bytes]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item_bytes(item))
        if len(batch) > ITEMS_PER_CALL_MAX:
            raise InvalidArgument(f"at most {ITEMS_PER_CALL_MAX} items per call")
    return batch


class RedisCounters:
    """Counters, distinct counts and heavy hitters on one Redis server; see the module docs.

    Thread-safe as far as redis-py's connection pool is: every operation is one script or
    one command, atomic on the server.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = "",
        top_k: int = 100,
        cms_width: int = 2048,
        cms_depth: int = 5,
        seed: int = 0,
    ) -> None:
        if not isinstance(namespace, str):
            raise InvalidArgument("namespace must be a str")
        if not isinstance(top_k, int) or not 0 < top_k <= TOP_K_MAX:
            raise InvalidArgument(f"top_k must be in [1, {TOP_K_MAX}]")
        check_shape(cms_width, cms_depth, seed, cells_max=CMS_CELLS_MAX, prefix="cms_")
        self._client = client
        self._namespace = namespace
        self._top_k = top_k
        self._width = cms_width
        self._depth = cms_depth
        self._seed = seed
        self._shape = f"{cms_width}x{cms_depth}@{seed}"
        self._increment = RedisScript(client, _INCREMENT)
        self._add_distinct = RedisScript(client, _ADD_DISTINCT)
        self._add_frequent = RedisScript(client, _ADD_FREQUENT)

    @classmethod
    def open(
        cls, url: str, *, namespace: str = "", timeout_s: float = 10.0, **options: Any
    ) -> RedisCounters:
        """Connect to ``url`` (``redis://host:port/db``); ``options`` go to ``__init__``."""
        client = redis.Redis.from_url(url, socket_timeout=timeout_s)
        return cls(client, namespace=namespace, **options)

    def close(self) -> None:
        """Release the connections; the counters stay on the server."""
        with redis_call("close"):
            self._client.close()

    def _key(self, kind: str, name: str) -> str:
        return f"{self._namespace}{kind}:{name}"

    # -- counters -------------------------------------------------------------------------

    def increment(self, name: str, amount: int = 1) -> int:
        """Add ``amount`` to counter ``name`` (``INCRBY``); returns the value afterwards.

        Past ``COUNTERS_MAX`` names raises ``Overloaded``; a sum past 64 bits raises
        ``InvalidArgument``; either changes nothing.
        """
        check_name(name)
        check_amount(amount)
        keys = [self._key("counter", name), self._key("names", "counter")]
        with redis_call("increment"):
            value = self._increment(keys=keys, args=[name, amount, COUNTERS_MAX])
        return int(value)

    def value(self, name: str) -> int:
        """The counter's value (0 when never incremented)."""
        check_name(name)
        with redis_call("value"):
            value = self._client.get(self._key("counter", name))
        return 0 if value is None else int(value)

    # -- distinct counts ------------------------------------------------------------------

    def add_distinct(self, name: str, items: Iterable[bytes | str]) -> int:
        """Add ``items`` to the HyperLogLog ``name`` atomically; returns its count after."""
        check_name(name)
        batch = _items(items)
        keys = [self._key("distinct", name), self._key("names", "distinct")]
        with redis_call("add_distinct"):
            count = self._add_distinct(keys=keys, args=[name, SKETCHES_MAX, *batch])
        return int(count)

    def count_distinct(self, name: str) -> int:
        """The estimated number of distinct items added to ``name`` (0 when none)."""
        check_name(name)
        with redis_call("count_distinct"):
            count = self._client.pfcount(self._key("distinct", name))
        return int(count)

    # -- heavy hitters --------------------------------------------------------------------

    def _columns(self, item: bytes) -> list[int]:
        digest = xxhash.xxh3_128_intdigest(item, self._seed)
        position, step = digest & _MASK_64, (digest >> 64) | 1
        return [(position + row * step) % self._width for row in range(self._depth)]

    def add_frequent(self, name: str, items: Iterable[bytes | str]) -> int:
        """Count one occurrence of each of ``items`` in tracker ``name``, atomically.

        Returns the tracker's total count afterwards. A tracker keeps the shape it was
        created with: an adapter of another width, depth or seed gets ``InvalidArgument``.
        """
        check_name(name)
        batch = _items(items)
        args: list[Any] = [name, SKETCHES_MAX, self._top_k, self._depth, self._shape]
        for item in batch:
            args.append(item)
            args.extend(self._columns(item))
        keys = [self._key("cms", name), self._key("topk", name), self._key("names", "frequent")]
        with redis_call("add_frequent"):
            total = self._add_frequent(keys=keys, args=args)
        return int(total)

    def estimate(self, name: str, item: bytes | str) -> int:
        """The Count-Min estimate of ``item``'s count in ``name``: never below the truth."""
        check_name(name)
        fields = [f"{row}:{column}" for row, column in enumerate(self._columns(item_bytes(item)))]
        with redis_call("estimate"):
            cells = self._client.hmget(self._key("cms", name), fields)
        return min(int(cell or 0) for cell in cells)

    def top_k(self, name: str, n: int = 10) -> list[tuple[bytes, int]]:
        """Up to ``n`` candidates with their current estimates, largest first.

        Two reads (the candidates, then their cells), not one snapshot: an estimate may
        include adds made between them. Heavy hitters (above total / k) are found; the
        order among light items is not promised.
        """
        check_name(name)
        if not isinstance(n, int) or n < 0:
            raise InvalidArgument(f"n must be a non-negative int, got {n!r}")
        with redis_call("top_k"):
            members = cast("list[bytes]", self._client.zrange(self._key("topk", name), 0, -1))
            pipe = self._client.pipeline(transaction=False)
            for member in members:
                fields = [f"{row}:{col}" for row, col in enumerate(self._columns(member))]
                pipe.hmget(self._key("cms", name), fields)
            rows = pipe.execute() if members else []
        ranked = [
            (member, min(int(cell or 0) for cell in cells))
            for member, cells in zip(members, rows, strict=True)
        ]
        ranked.sort(key=lambda pair: (-pair[1], pair[0]))
        return ranked[:n]
