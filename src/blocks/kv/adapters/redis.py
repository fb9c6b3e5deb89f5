"""``RedisKeyValueStore``: the ``blocks.kv`` API on standalone Redis or Redis Cluster.

Theory of operation
-------------------
Each kv key is one Redis hash, ``<namespace><key>`` (keys are binary-safe, so any bytes
key maps as is), with three fields: ``v`` the value, ``i`` the key's *incarnation* (random
bits drawn when the key is created) and ``n`` a counter raised by every write. Its
*version* is ``"<i>:<n>"``: it changes at every write, and since a deleted key that is
written again gets a fresh incarnation, a version is never seen twice for two different
writes (no ABA). One hash holds value and version, so both are always in one cluster slot,
whatever the key (a ``{...}`` in a user key only picks that slot).

Every write runs in a Lua script (loaded once, then called by ``EVALSHA``; redis-py loads
it again after a server restart emptied the script cache), so the value and its version
move together. ``compare_and_set(key, value, expected_version)`` writes only when the key's
version is still ``expected_version`` (``None``: only when the key is absent) and raises
``Conflict`` otherwise: the Redis way to make read-modify-write safe between clients.
Redis keeps one value per key: two writers never leave siblings (see docs/adapters.md).

``put_many`` is one script over all its keys on standalone Redis, so it is atomic; on a
cluster it is one script per hash slot (atomic per slot, not across slots). ``keys()`` and
``len()`` walk ``SCAN MATCH <namespace>*`` (on every master of a cluster): they cost a pass
over the server's keyspace (``SCAN`` may repeat a name; it is counted once), and are
bounded by ``KEYS_LISTED_MAX``.

Errors: input is checked with the kv limits before anything is sent (``InvalidArgument``);
Redis failures become the library's errors through ``blocks.core.rediscall`` (and a
cluster client's own failures ``Unavailable``); a closed store raises
``FailedPrecondition``. Durability is the server's: with ``appendonly yes`` and
``appendfsync always`` an acknowledged write survives a server restart.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.cluster
import redis.exceptions

from blocks.core.errors import Conflict, FailedPrecondition, InvalidArgument, Overloaded
from blocks.core.rediscall import RedisScript, connect_redis, redis_cluster_call
from blocks.kv.limits import (
    VALUE_BYTES_MAX_DEFAULT,
    VALUE_BYTES_MAX_LIMIT,
    check_batch_size,
    check_key,
    check_value,
)

__all__ = [
    "CLUSTER_PROPERTIES",
    "KEYS_LISTED_MAX",
    "PROPERTIES",
    "RedisKeyValueStore",
    "VersionedValue",
]

PROPERTIES = frozenset({"read-your-writes", "delete", "batch order", "restart", "bad input"})
"""The ``KeyValueStoreContract`` properties standalone Redis gives (all; ``restart`` needs
the server's append-only file fsynced per write)."""
CLUSTER_PROPERTIES = PROPERTIES - {"restart"}
"""What the cluster test claims: a restart of every node is not run by its contract test."""

KEYS_LISTED_MAX = 1_000_000
"""Most keys ``keys()`` and ``len()`` walk; more raises ``Overloaded``."""
SCAN_COUNT = 1_000
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")
"""No glob characters (``SCAN MATCH`` takes the namespace as is) and no braces (a hash tag
would put every key of the namespace in one cluster slot)."""
TIMEOUT_S_DEFAULT = 10.0

# KEYS[i]: the hashes; ARGV[2i-1]: value i, ARGV[2i]: the incarnation if key i is new.
# Two commands per key (a new key's incarnation rides on the value's HSET).
_PUT_SCRIPT = """
for i = 1, #KEYS do
  if redis.call('HINCRBY', KEYS[i], 'n', 1) == 1 then
    redis.call('HSET', KEYS[i], 'v', ARGV[2 * i - 1], 'i', ARGV[2 * i])
  else
    redis.call('HSET', KEYS[i], 'v', ARGV[2 * i - 1])
  end
end
return #KEYS
"""

# ARGV[1]: value, ARGV[2]: expected version ('' = absent), ARGV[3]: incarnation if new.
# Returns {1, new version} or {0, current version ('' = absent)}.
_CAS_SCRIPT = """
local current = redis.call('HMGET', KEYS[1], 'i', 'n')
local version = ''
if current[1] then version = current[1] .. ':' .. current[2] end
if version ~= ARGV[2] then return {0, version} end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if n == 1 then redis.call('HSET', KEYS[1], 'i', ARGV[3]) end
redis.call('HSET', KEYS[1], 'v', ARGV[1])
return {1, redis.call('HGET', KEYS[1], 'i') .. ':' .. n}
"""


@dataclass(frozen=True, slots=True)
class VersionedValue:
    """A key's value and version as one read saw them; both ``None`` when it is absent."""

    value: bytes | None
    version: str | None


class RedisKeyValueStore:
    """A ``KeyValueStore`` on Redis; build it with ``open`` (see the module docs)."""

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        namespace: str = "blocks:kv:",
        value_bytes_max: int = VALUE_BYTES_MAX_DEFAULT,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(namespace, str) or not NAMESPACE_PATTERN.fullmatch(namespace):
            raise InvalidArgument(f"namespace must match {NAMESPACE_PATTERN.pattern}")
        if not 0 < value_bytes_max <= VALUE_BYTES_MAX_LIMIT:
            raise InvalidArgument(f"value_bytes_max must be in (0, {VALUE_BYTES_MAX_LIMIT}]")
        self._client = client
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._prefix = namespace.encode()
        self.value_bytes_max = value_bytes_max
        self._rng = rng or random.SystemRandom()
        self._put = RedisScript(client, _PUT_SCRIPT)
        self._cas = RedisScript(client, _CAS_SCRIPT)
        self._closed = False

    @classmethod
    def open(
        cls,
        url: str,
        *,
        namespace: str = "blocks:kv:",
        cluster: bool = False,
        value_bytes_max: int = VALUE_BYTES_MAX_DEFAULT,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        rng: random.Random | None = None,
    ) -> RedisKeyValueStore:
        """Connect to ``url`` (``redis://host:port[/db]``; with ``cluster=True`` any node of
        a Redis Cluster). No command is retried on its own: a write whose reply was lost
        raises ``Timeout`` or ``Unavailable`` and may have happened."""
        client = connect_redis(url, timeout_s=timeout_s, cluster=cluster)
        return cls(client, namespace=namespace, value_bytes_max=value_bytes_max, rng=rng)

    # -- the KeyValueStore protocol ----------------------------------------------------------

    def put(self, key: bytes | str, value: bytes) -> None:
        # ``put_many`` of one pair, without its batch machinery (one key is one slot).
        name = self._name(key)
        args = [check_value(value, self.value_bytes_max), self._incarnation()]
        with redis_cluster_call("put"):
            self._put(keys=[name], args=args)

    def get(self, key: bytes | str) -> bytes | None:
        name = self._name(key)
        with redis_cluster_call("get"):
            return cast("bytes | None", self._client.hget(name, "v"))

    def delete(self, key: bytes | str) -> bool:
        name = self._name(key)
        with redis_cluster_call("delete"):
            return bool(self._client.delete(name))

    def put_many(self, items: Iterable[tuple[bytes | str, bytes]]) -> None:
        self._require_open()
        pairs = [(check_key(key), check_value(value, self.value_bytes_max)) for key, value in items]
        check_batch_size(len(pairs))
        if not pairs:
            return
        for group in self._slot_groups(pairs):
            keys = [self._prefix + key for key, _ in group]
            args: list[bytes] = []
            for _, value in group:
                args += [value, self._incarnation()]
            with redis_cluster_call("put"):
                self._put(keys=keys, args=args)

    def get_many(self, keys: Iterable[bytes | str]) -> list[bytes | None]:
        names = [self._name(key) for key in keys]
        check_batch_size(len(names))
        if not names:
            return []
        with redis_cluster_call("get_many"):
            pipeline = self._client.pipeline(transaction=False)
            for name in names:
                pipeline.hget(name, "v")
            return cast("list[bytes | None]", pipeline.execute())

    def keys(self) -> list[bytes]:
        skip = len(self._prefix)
        return [name[skip:] for name in self._scan()]

    def __len__(self) -> int:
        return len(self._scan())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with redis_cluster_call("close"):
            self._client.close()

    # -- versions ----------------------------------------------------------------------------

    def get_versioned(self, key: bytes | str) -> VersionedValue:
        """The value and version of ``key`` from one read."""
        name = self._name(key)
        with redis_cluster_call("get"):
            fields = cast("list[bytes | None]", self._client.hmget(name, ["v", "i", "n"]))
        value, incarnation, counter = fields
        if value is None or incarnation is None or counter is None:
            return VersionedValue(None, None)
        return VersionedValue(value, f"{incarnation.decode()}:{counter.decode()}")

    def compare_and_set(self, key: bytes | str, value: bytes, expected_version: str | None) -> str:
        """Store ``value`` only if ``key``'s version is ``expected_version`` (``None``: only
        if absent); return the new version. ``Conflict`` (nothing written) when another
        write came between."""
        name = self._name(key)
        data = check_value(value, self.value_bytes_max)
        if expected_version is not None and not isinstance(expected_version, str):
            raise InvalidArgument("expected_version must be a str from get_versioned, or None")
        expected = expected_version or ""
        with redis_cluster_call("compare_and_set"):
            done, version = self._cas(keys=[name], args=[data, expected, self._incarnation()])
        if not done:
            current = version.decode() or None
            raise Conflict(f"version is {current!r}, not {expected_version!r}")
        return cast("bytes", version).decode()

    # -- helpers -----------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("the store is closed")

    def _name(self, key: Any) -> bytes:
        self._require_open()
        return self._prefix + check_key(key)

    def _incarnation(self) -> bytes:
        return b"%016x" % self._rng.getrandbits(64)

    def _slot_groups(self, pairs: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
        """All pairs as one group on standalone Redis; one group per hash slot on a cluster
        (a script may only touch keys of one slot), in first-seen order of the slots."""
        if not self._cluster:
            return [pairs]
        cluster = cast("redis.cluster.RedisCluster", self._client)
        groups: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in pairs:
            slot: int = cluster.keyslot(self._prefix + key)  # type: ignore[no-untyped-call]
            groups.setdefault(slot, []).append((key, value))
        return list(groups.values())

    def _scan(self) -> set[bytes]:
        """Every key name of the namespace (a set: ``SCAN`` may return a name twice)."""
        self._require_open()
        pattern = self._prefix + b"*"
        names: set[bytes] = set()
        with redis_cluster_call("scan"):
            for name in self._client.scan_iter(match=pattern, count=SCAN_COUNT):
                names.add(name)
                if len(names) > KEYS_LISTED_MAX:
                    raise Overloaded(f"more than {KEYS_LISTED_MAX} keys in the namespace")
        return names
