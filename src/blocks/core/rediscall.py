"""Redis errors as blocks errors: one mapping for every Redis adapter.

Theory of operation
-------------------
An adapter wraps each call to redis-py in ``with redis_call("what"):``; whatever redis-py
raises leaves as the block's own error, so redis-py's exceptions never reach a caller:

* the connection is down or refused, the server is loading its data or is read-only:
  ``Unavailable`` (retry later);
* no answer within the client's socket timeout: ``Timeout`` (it may have taken effect);
* the server is at ``maxmemory`` with a policy that refuses writes (``-OOM``): ``Overloaded``;
* our own Lua scripts raise error replies starting with ``BLOCKS_OVERLOADED`` or
  ``BLOCKS_INVALID`` for a bound reached or bad input found on the server:
  ``Overloaded`` / ``InvalidArgument``; an integer overflow of ``INCRBY``/``HINCRBY`` is
  ``InvalidArgument`` too (the amount cannot be added; nothing changed);
* any other error reply (a wrong type under our key, a refused command): ``PeerError``, the
  server answered something the adapter does not expect.

An adapter that may talk to a Redis Cluster wraps its calls in ``redis_cluster_call`` instead:
the cluster client's own failures (no reachable node, slots not covered, redirects run out)
are not ``RedisError``s, or are mere error replies there, and leave as ``Unavailable``.
``connect_redis`` opens the client such an adapter uses: the same socket timeout for connect
and reply, and no command retried on its own (a write whose reply was lost raises ``Timeout``
or ``Unavailable`` and may have happened; the caller decides whether to try again).

Both helpers sit on every adapter call, so they are kept cheap (measured for #20): the
context manager is a plain class (a generator-based one cost about 2 us a call on the
loaded 2-core machine), and ``RedisScript`` calls ``EVALSHA`` itself where redis-py's
``Script.__call__`` runs two ``import`` statements per call (about 12 us there).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import redis
import redis.cluster
import redis.exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from blocks.core.errors import (
    BlocksError,
    InvalidArgument,
    Overloaded,
    PeerError,
    Timeout,
    Unavailable,
)

__all__ = [
    "INVALID_REPLY",
    "OVERLOADED_REPLY",
    "RedisScript",
    "connect_redis",
    "map_redis_error",
    "redis_call",
    "redis_cluster_call",
]

OVERLOADED_REPLY = "BLOCKS_OVERLOADED"
"""Prefix of a Lua error reply that means a bound was reached (``Overloaded``)."""
INVALID_REPLY = "BLOCKS_INVALID"
"""Prefix of a Lua error reply that means bad input (``InvalidArgument``)."""


def map_redis_error(error: redis_errors.RedisError, doing: str) -> BlocksError:
    """The blocks error for ``error``, raised by redis-py while ``doing``."""
    # Script errors may arrive wrapped ("Error running script ..."): markers are found
    # anywhere in the text.
    text = str(error)
    if isinstance(error, redis_errors.TimeoutError):
        return Timeout(f"redis {doing}: no answer in time ({text})")
    if isinstance(
        error,
        redis_errors.ConnectionError | redis_errors.ReadOnlyError | redis_errors.TryAgainError,
    ):
        return Unavailable(f"redis {doing}: {text or type(error).__name__}")
    if isinstance(error, redis_errors.OutOfMemoryError) or text.startswith("OOM"):
        return Overloaded(f"redis {doing}: server at maxmemory ({text})")
    if OVERLOADED_REPLY in text:
        return Overloaded(f"redis {doing}: {text.split(OVERLOADED_REPLY, 1)[1].strip()}")
    if INVALID_REPLY in text:
        return InvalidArgument(f"redis {doing}: {text.split(INVALID_REPLY, 1)[1].strip()}")
    if "would overflow" in text:
        return InvalidArgument(f"redis {doing}: {text}")
    return PeerError(f"redis {doing}: unexpected reply: {text or type(error).__name__}")


class redis_call:  # lower case: used like the function it was
    """Run the block's redis-py calls; any ``RedisError`` leaves as a blocks error."""

    __slots__ = ("_doing",)

    def __init__(self, doing: str) -> None:
        self._doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(error, redis_errors.RedisError):
            raise map_redis_error(error, self._doing) from error


class redis_cluster_call(redis_call):  # lower case: used like the function it was
    """``redis_call``, plus the cluster client's own failures (no reachable node, slots not
    covered, redirects run out), which are not ``RedisError``s or are mere error replies
    there: ``Unavailable``, retry later."""

    __slots__ = ()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(error, redis_errors.RedisClusterException | redis_errors.ClusterError):
            raise Unavailable(f"redis cluster {self._doing}: {error}") from error
        super().__exit__(kind, error, traceback)


def connect_redis(
    url: str, *, timeout_s: float, cluster: bool = False
) -> redis.Redis | redis.cluster.RedisCluster:
    """A client for ``url`` (``redis://host:port[/db]``; with ``cluster=True`` any node of a
    Redis Cluster) with ``timeout_s`` for connecting and for each reply, that retries no
    command on its own. A refused connection or a cluster that cannot be reached raises
    ``Unavailable``."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    with redis_cluster_call("connect"):
        if cluster:
            return redis.cluster.RedisCluster.from_url(url, **options)
        return redis.Redis.from_url(url, **options)


class RedisScript:
    """A Lua script called by ``EVALSHA`` (what ``client.register_script`` gives, minus its
    per-call imports): the first call on a server that has not seen it (a fresh or restarted
    server, an emptied script cache) gets ``NOSCRIPT``, loads it and calls it again.
    Not for pipelines: a script in a pipeline goes through redis-py's own ``Script``."""

    __slots__ = ("_client", "_text", "sha")

    def __init__(self, client: redis.Redis | redis.cluster.RedisCluster, text: str) -> None:
        self._client = client
        self._text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        client = self._client
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            self.sha = client.script_load(self._text)
            return client.evalsha(self.sha, len(keys), *keys, *args)
