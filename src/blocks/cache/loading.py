"""Read-through loading: request coalescing, XFetch early refresh, negative caching, decorator.

Theory of operation. ``ReadThrough`` puts a loader (an async function ``key -> value``) behind
a ``Cache``. The three protections against stampedes are:

* **Coalescing (single flight).** The first miss for a key starts one load and records its
  future in ``_inflight``; every later caller for the same key awaits that future instead of
  calling the loader. When the load ends, every waiter gets the same value or the very same
  exception object. The number of keys loading at once is bounded by ``inflight_max``;
  beyond it, callers get ``Overloaded``.
* **Probabilistic early refresh (XFetch, Vattani, Chierichetti and Lowenstein, VLDB 2015).**
  Each entry remembers how long its load took (``delta``) and when it expires. A hit
  recomputes early when ``now - delta * beta * ln(u) >= expiry`` for ``u`` uniform in (0, 1]
  drawn from the injected ``random.Random``: the chance grows as expiry nears and with the
  cost of the load, so one caller refreshes a hot key just before it expires while the rest
  keep reading the cached value. ``beta > 1`` refreshes earlier; ``beta = 0`` disables it.
* **Negative caching.** A loader that raises ``NotFound`` can have that answer cached for
  ``negative_ttl`` seconds, so a flood of lookups for a missing key does not reach the store.

``cached`` is a decorator for sync and async functions: sync functions get plain memoisation
in the cache; async functions go through a ``ReadThrough`` and so are coalesced too.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import random
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from blocks.cache.api import Cache
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument, NotFound, Overloaded

__all__ = ["INFLIGHT_MAX", "ReadThrough", "cached"]

_NO_ENTRY: Any = object()
"""Private miss marker: ``None`` may be a cached value."""

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

INFLIGHT_MAX = 10_000
"""Default bound on keys being loaded at the same time by one ``ReadThrough``."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What ``ReadThrough`` stores: the value, its load time and its expiry (monotonic s)."""

    value: Any
    delta_s: float
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class _Absent:
    """A cached "not found" answer."""

    message: str


class ReadThrough(Generic[K, V]):
    """A cache in front of an async loader; see the module docstring for the guarantees."""

    def __init__(
        self,
        cache: Cache[K, Any],
        loader: Callable[[K], Awaitable[V]],
        *,
        ttl: float | None = None,
        negative_ttl: float | None = None,
        beta: float = 1.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        inflight_max: int = INFLIGHT_MAX,
    ) -> None:
        if not math.isfinite(beta) or beta < 0:
            raise InvalidArgument(f"beta must be a finite number >= 0, got {beta}")
        if inflight_max < 1:
            raise InvalidArgument(f"inflight_max must be >= 1, got {inflight_max}")
        for name, value in (("ttl", ttl), ("negative_ttl", negative_ttl)):
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise InvalidArgument(f"{name} must be a finite number > 0, got {value}")
        self._cache = cache
        self._loader = loader
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._beta = beta
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._random = rng if rng is not None else random.Random()
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self._inflight_max = inflight_max
        self.loads = 0
        """Loader calls started (for tests and metrics)."""
        self.early_refreshes = 0

    @property
    def cache(self) -> Cache[K, Any]:
        return self._cache

    async def get(self, key: K) -> V:
        """The value for ``key``: cached, or loaded once however many callers ask at once.

        Raises whatever the loader raised (the same exception object for every waiter), and
        ``NotFound`` from the negative cache while a "not found" answer is cached.
        """
        entry = self._cache.get(key, _NO_ENTRY)
        if isinstance(entry, _Absent):
            raise NotFound(entry.message)
        if isinstance(entry, _Loaded):
            cached_value: V = entry.value
            if not self._should_refresh_early(entry):
                return cached_value
            if key in self._inflight:
                return cached_value  # someone is refreshing it already
            self.early_refreshes += 1
        return await self._load_once(key)

    def invalidate(self, key: K) -> bool:
        """Drop ``key`` from the cache (a load in flight still completes and is stored)."""
        return self._cache.delete(key)

    def _should_refresh_early(self, entry: _Loaded) -> bool:
        if entry.expires_at is None or self._beta == 0 or entry.delta_s <= 0:
            return False
        uniform = 1.0 - self._random.random()  # in (0, 1]
        gap = -entry.delta_s * self._beta * math.log(uniform)
        return self._clock.monotonic() + gap >= entry.expires_at

    async def _load_once(self, key: K) -> V:
        future = self._inflight.get(key)
        if future is None:
            if len(self._inflight) >= self._inflight_max:
                raise Overloaded(f"{len(self._inflight)} keys already loading", retry_after_ms=10)
            future = asyncio.get_running_loop().create_future()
            # Mark the outcome as retrieved even if every waiter was cancelled.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._inflight[key] = future
            asyncio.get_running_loop().create_task(self._run_load(key, future))
        return await asyncio.shield(future)

    async def _run_load(self, key: K, future: asyncio.Future[V]) -> None:
        self.loads += 1
        started = self._clock.monotonic()
        # Every waiter must see the same outcome, also when storing it fails (a cache on an
        # engine can refuse a put): an unset future would leave them waiting forever.
        try:
            value = await self._loader(key)
        except NotFound as error:
            try:
                if self._negative_ttl is not None:
                    self._cache.put(key, _Absent(str(error)), ttl=self._negative_ttl)
            except BaseException as put_error:
                future.set_exception(put_error)
            else:
                future.set_exception(error)
        except BaseException as error:
            future.set_exception(error)
        else:
            finished = self._clock.monotonic()
            expires_at = None if self._ttl is None else finished + self._ttl
            try:
                loaded = _Loaded(value, finished - started, expires_at)
                self._cache.put(key, loaded, ttl=self._ttl)
            except BaseException as put_error:
                future.set_exception(put_error)
            else:
                future.set_result(value)
        finally:
            del self._inflight[key]


def _default_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    if not kwargs:
        return args if len(args) != 1 else args[0]
    return (args, tuple(sorted(kwargs.items())))


def cached(
    cache: Cache[Any, Any],
    *,
    ttl: float | None = None,
    key: Callable[..., Hashable] | None = None,
    negative_ttl: float | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Memoise a function in ``cache``; async functions are also coalesced per key.

    ``key(*args, **kwargs)`` builds the cache key (default: the single argument, or the
    argument tuple). Exceptions are never cached, except ``NotFound`` with ``negative_ttl``
    for async functions.
    """

    def make_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        return key(*args, **kwargs) if key is not None else _default_key(args, kwargs)

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(function):
            calls: dict[Hashable, tuple[tuple[Any, ...], dict[str, Any]]] = {}

            async def load(cache_key: Hashable) -> Any:
                args, kwargs = calls.pop(cache_key)
                return await function(*args, **kwargs)

            reader: ReadThrough[Any, Any] = ReadThrough(
                cache, load, ttl=ttl, negative_ttl=negative_ttl
            )

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                cache_key = make_key(args, kwargs)
                calls.setdefault(cache_key, (args, kwargs))
                try:
                    return await reader.get(cache_key)
                finally:
                    if cache_key not in reader._inflight:
                        calls.pop(cache_key, None)

            async_wrapper.cache_reader = reader  # type: ignore[attr-defined]
            return async_wrapper

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cache_key = make_key(args, kwargs)
            value = cache.get(cache_key, _NO_ENTRY)
            if value is _NO_ENTRY:
                value = function(*args, **kwargs)
                cache.put(cache_key, value, ttl=ttl)
            return value

        return wrapper

    return decorate
