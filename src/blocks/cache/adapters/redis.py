"""``RedisCache``: the ``blocks.cache`` API on Redis, with single-flight loading.

Theory of operation
-------------------
An entry is one Redis string, ``<namespace>k:<key>``, where the key is its msgpack encoding
(so ``1``, ``"1"`` and ``b"1"`` are three keys) and the value is encoded by the adapter's
codec (msgpack by default, see below). ``put`` is one ``SET`` (with ``PX`` for a TTL, which
also clears an older entry's TTL), ``get`` one ``GET``, ``delete`` one ``DEL``: each atomic
on the server, so any number of clients share the cache.

What Redis decides, not the adapter:

* **Expiry** runs on the server's clock: an entry put with ``ttl`` seconds is gone after
  ``ceil(ttl * 1000)`` ms of the server's time (never returned after, removed lazily on
  access and by Redis's own active expiry). The injected clock plays no part: an engine's
  TTL cannot follow a test's ``ManualClock`` (contract property "exact expiry" not claimed).
  ``sweep`` therefore has nothing to do and returns 0.
* **The size bound** is the server's ``maxmemory`` in bytes, shared by every namespace and
  all other data on that server, applied by its ``maxmemory-policy``. For a cache run it
  with ``allkeys-lru`` (or ``allkeys-lfu``): a write past the bound first evicts keys chosen
  by sampled LRU (``maxmemory-samples`` keys, not the exact least recent one), so a put is
  always resident right after it. With the default ``noeviction`` a write past the bound is
  refused: ``put`` raises ``Overloaded`` and changes nothing. ``capacity`` and the ``weight``
  argument are kept for the protocol (weights are validated against ``capacity``) but
  nothing is bounded by weight (property "capacity" not claimed).
* **Statistics**: ``hits``/``misses`` are this adapter's own exact counts; ``evictions`` and
  ``expirations`` are the server's ``evicted_keys``/``expired_keys`` since this adapter was
  built, for the whole server, every namespace included; ``size`` counts the namespace's
  keys with ``SCAN`` (``O(keys in the database)``: for a dashboard, not a hot path) and
  ``weight`` equals ``size`` (property "statistics" not claimed).

Loading: ``get_or_load(key, loader)`` runs at most one ``loader`` per key per adapter at a
time (single flight across this client's threads); concurrent callers wait for its result
or its exception, at most ``INFLIGHT_MAX`` keys load at once (``Overloaded`` beyond). Other
clients of the server coalesce only with themselves. ``blocks.cache.loading.ReadThrough``
(async loaders) works over this cache given a codec that carries its records (pickle):
msgpack refuses them, and every reader gets that ``InvalidArgument``.

Codec: the default is ``blocks.core.codec`` (msgpack: a tuple comes back as a list, a type
msgpack cannot carry is refused with ``InvalidArgument``); pass ``encode``/``decode`` for
another (pickle round-trips any Python value, but only read a pickle from a server nobody
else can write to). A stored value that does not decode raises ``PeerError``.

Errors are the block's own (``blocks.core.rediscall``): server down ``Unavailable``, no
answer in time ``Timeout``, ``-OOM`` ``Overloaded``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar, cast

import redis

from blocks.cache.api import MISSING, CacheStats
from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, InvalidArgument, Overloaded, PeerError
from blocks.core.rediscall import redis_call

__all__ = ["INFLIGHT_MAX", "KEY_BYTES_MAX", "PROPERTIES", "RedisCache"]

PROPERTIES = frozenset({"exact values", "bad input"})
"""The ``CacheContract`` properties Redis gives (the module docs say why not the others)."""

KEY_BYTES_MAX = 16 * 1024
"""Largest encoded key."""
VALUE_BYTES_MAX = 64 * 1024 * 1024
"""Largest encoded value (Redis's own limit is 512 MiB)."""
INFLIGHT_MAX = 10_000
"""Default bound on keys loading at once through one adapter's ``get_or_load``."""
SCAN_BATCH = 1_000
_GLOB_SPECIAL = frozenset("*?[]\\")

V = TypeVar("V")

_NO_ENTRY: Any = object()
"""Private miss marker (``get`` turns ``MISSING`` into ``None``, a cacheable value)."""


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in _GLOB_SPECIAL else char for char in text)


class RedisCache:
    """A ``Cache`` on one Redis server; see the module docs for what the server decides.

    Thread-safe: redis-py's pool serves each call, the counters and the in-flight table are
    under a lock.
    """

    def __init__(
        self,
        client: redis.Redis,
        capacity: int,
        *,
        namespace: str = "",
        encode: Callable[[Any], bytes] | None = None,
        decode: Callable[[bytes], Any] | None = None,
        inflight_max: int = INFLIGHT_MAX,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InvalidArgument(f"capacity must be a positive int, got {capacity!r}")
        if isinstance(inflight_max, bool) or not isinstance(inflight_max, int):
            raise InvalidArgument("inflight_max must be an int")
        if inflight_max < 1:
            raise InvalidArgument(f"inflight_max must be >= 1, got {inflight_max}")
        if not isinstance(namespace, str):
            raise InvalidArgument("namespace must be a str")
        self._client = client
        self._capacity = capacity
        self._namespace = namespace
        self._prefix = f"{namespace}k:".encode()
        self._encode = encode or (lambda value: pack(value, size_max=VALUE_BYTES_MAX))
        self._decode = decode or (lambda data: unpack(data, size_max=VALUE_BYTES_MAX))
        self._inflight_max = inflight_max
        self._lock = threading.Lock()
        self._inflight: dict[bytes, Future[Any]] = {}
        self._hits = 0
        self._misses = 0
        self.loads = 0
        """Loader calls started by ``get_or_load`` (for tests and metrics)."""
        self._server_base = self._server_counters()

    @classmethod
    def open(
        cls, url: str, capacity: int, *, timeout_s: float = 10.0, **options: Any
    ) -> RedisCache:
        """Connect to ``url`` (``redis://host:port/db``); ``options`` go to ``__init__``."""
        client = redis.Redis.from_url(url, socket_timeout=timeout_s)
        return cls(client, capacity, **options)

    def close(self) -> None:
        """Release the connections; the entries stay on the server."""
        with redis_call("close"):
            self._client.close()

    # -- encoding -----------------------------------------------------------------------

    def _key(self, key: Any) -> bytes:
        try:
            hash(key)
        except TypeError:
            raise InvalidArgument(f"keys must be hashable, got {type(key).__name__}") from None
        data = pack(key, size_max=KEY_BYTES_MAX)
        return self._prefix + data

    def _value(self, data: bytes) -> Any:
        try:
            return self._decode(data)
        except Exception as error:  # a custom codec raises its own errors
            raise PeerError(f"a stored value does not decode: {error}") from None

    # -- the Cache protocol ---------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """The weight bound of the protocol: validates weights; Redis bounds bytes instead."""
        return self._capacity

    def get(self, key: Any, default: Any = MISSING) -> Any:
        """The live value for ``key`` (one ``GET``); on a miss ``default``, else ``None``."""
        found = self._read(self._key(key))
        with self._lock:
            if found is _NO_ENTRY:
                self._misses += 1
            else:
                self._hits += 1
        if found is _NO_ENTRY:
            return None if default is MISSING else default
        return found

    def put(self, key: Any, value: Any, ttl: float | None = None, weight: int = 1) -> None:
        """Store ``value`` under ``key`` (one ``SET``, ``PX`` for a TTL in seconds).

        Bad input (unhashable key, weight outside ``[1, capacity]``, ttl not a finite
        number > 0, a value the codec refuses) raises ``InvalidArgument`` and stores nothing;
        a server at ``maxmemory`` that does not evict raises ``Overloaded``.
        """
        name = self._key(key)
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise InvalidArgument(f"weight must be an int, got {weight!r}")
        if not 1 <= weight <= self._capacity:
            raise InvalidArgument(f"weight must be in [1, {self._capacity}], got {weight}")
        ttl_ms: int | None = None
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int | float):
                raise InvalidArgument(f"ttl must be a number of seconds, got {ttl!r}")
            if not math.isfinite(ttl) or ttl <= 0:
                raise InvalidArgument(f"ttl must be a finite number > 0, got {ttl}")
            ttl_ms = max(1, math.ceil(ttl * 1000))
        try:
            data = self._encode(value)
        except BlocksError:
            raise
        except Exception as error:  # a custom codec raises its own errors
            raise InvalidArgument(f"the value does not encode: {error}") from None
        if not isinstance(data, bytes) or len(data) > VALUE_BYTES_MAX:
            raise InvalidArgument(f"encoded values are bytes of at most {VALUE_BYTES_MAX}")
        # SET sent as is: redis-py's ``set`` checks its dozen options on every call (about
        # 4 us on the loaded 2-core machine, #20's overhead row)
        with redis_call("put"):
            if ttl_ms is None:
                self._client.execute_command("SET", name, data)  # type: ignore[no-untyped-call]
            else:
                self._client.execute_command("SET", name, data, "PX", ttl_ms)  # type: ignore[no-untyped-call]

    def delete(self, key: Any) -> bool:
        """Remove ``key`` (one ``DEL``); True if a live entry was removed."""
        name = self._key(key)
        with redis_call("delete"):
            removed = self._client.delete(name)
        return int(removed) == 1

    def __contains__(self, key: object) -> bool:
        """Whether a live entry exists (``EXISTS``); no statistics change."""
        name = self._key(key)
        with redis_call("exists"):
            found = self._client.exists(name)
        return int(found) == 1

    def __len__(self) -> int:
        """Keys of this namespace on the server now (``SCAN``: O(keys in the database))."""
        return len(self._scan())

    def stats(self) -> CacheStats:
        """This adapter's hits and misses; the server's evictions and expirations since it
        was built (every namespace); the namespace's key count as both size and weight."""
        evicted, expired = self._server_counters()
        size = len(self)
        with self._lock:
            hits, misses = self._hits, self._misses
        return CacheStats(
            hits=hits,
            misses=misses,
            evictions=max(0, evicted - self._server_base[0]),
            expirations=max(0, expired - self._server_base[1]),
            size=size,
            weight=size,
            capacity=self._capacity,
        )

    def sweep(self, max_entries: int = 64) -> int:
        """Nothing to do: Redis removes expired keys itself (lazily and actively). Returns 0."""
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise InvalidArgument(f"max_entries must be an int >= 0, got {max_entries!r}")
        return 0

    def clear(self) -> None:
        """Remove every key of this namespace (``SCAN`` + ``UNLINK``); counters are kept.
        Not atomic: a put made while it runs may survive it."""
        names = list(self._scan())
        with redis_call("clear"):
            for start in range(0, len(names), SCAN_BATCH):
                self._client.unlink(*names[start : start + SCAN_BATCH])

    # -- single-flight loading ------------------------------------------------------------

    def get_or_load(self, key: Hashable, loader: Callable[[], V], ttl: float | None = None) -> V:
        """The cached value for ``key``, or ``loader()``'s, stored with ``ttl``.

        One ``loader`` per key per adapter at a time: a caller that finds a load of ``key``
        in flight waits for it and gets its value or the very same exception. A loader's
        exception is not cached. Past ``inflight_max`` loading keys raises ``Overloaded``.
        """
        found = self.get(key, _NO_ENTRY)
        if found is not _NO_ENTRY:
            return cast("V", found)
        name = self._key(key)
        with self._lock:
            future = self._inflight.get(name)
            leader = future is None
            if future is None:
                if len(self._inflight) >= self._inflight_max:
                    raise Overloaded(f"{len(self._inflight)} keys loading", retry_after_ms=10)
                future = self._inflight[name] = Future()
        if leader:
            try:
                # A load that ended between our miss and our lead has stored the value.
                value = self._read(name)
                if value is _NO_ENTRY:
                    with self._lock:
                        self.loads += 1
                    value = loader()
                    self.put(key, value, ttl=ttl)
                future.set_result(value)
            except BaseException as error:
                future.set_exception(error)
            finally:
                with self._lock:
                    del self._inflight[name]
        return cast("V", future.result())

    # -- helpers --------------------------------------------------------------------------

    def _read(self, name: bytes) -> Any:
        """The decoded value under ``name``, or ``_NO_ENTRY``; no statistics."""
        with redis_call("get"):
            data = self._client.get(name)
        return _NO_ENTRY if data is None else self._value(cast("bytes", data))

    def _scan(self) -> set[bytes]:
        pattern = _glob_escape(self._namespace) + "k:*"
        with redis_call("scan"):
            found = self._client.scan_iter(match=pattern, count=SCAN_BATCH)
            return {cast("bytes", name) for name in found}

    def _server_counters(self) -> tuple[int, int]:
        with redis_call("info"):
            info = self._client.info("stats")
        return int(info.get("evicted_keys", 0)), int(info.get("expired_keys", 0))
