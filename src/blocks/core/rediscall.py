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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions as redis_errors

from blocks.core.errors import (
    BlocksError,
    InvalidArgument,
    Overloaded,
    PeerError,
    Timeout,
    Unavailable,
)

__all__ = ["INVALID_REPLY", "OVERLOADED_REPLY", "map_redis_error", "redis_call"]

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


@contextmanager
def redis_call(doing: str) -> Iterator[None]:
    """Run the block's redis-py calls; any ``RedisError`` leaves as a blocks error."""
    try:
        yield
    except redis_errors.RedisError as error:
        raise map_redis_error(error, doing) from error
