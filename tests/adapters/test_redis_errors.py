"""``blocks.core.rediscall``: every redis-py error leaves as the block's own error."""

from __future__ import annotations

import pytest

from blocks.core.errors import (
    BlocksError,
    InvalidArgument,
    Overloaded,
    PeerError,
    Timeout,
    Unavailable,
)

redis_errors = pytest.importorskip("redis.exceptions", reason="redis not installed")
rediscall = pytest.importorskip("blocks.core.rediscall", reason="redis not installed")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (redis_errors.ConnectionError("Connection refused"), Unavailable),
        (redis_errors.BusyLoadingError("LOADING"), Unavailable),
        (redis_errors.ReadOnlyError("READONLY replica"), Unavailable),
        (redis_errors.TimeoutError("Timeout reading"), Timeout),
        (redis_errors.OutOfMemoryError("command not allowed when used memory"), Overloaded),
        (redis_errors.ResponseError("BLOCKS_OVERLOADED at most 3 counters"), Overloaded),
        (redis_errors.ResponseError("BLOCKS_INVALID sketch shape"), InvalidArgument),
        (redis_errors.ResponseError("increment or decrement would overflow"), InvalidArgument),
        (redis_errors.ResponseError("WRONGTYPE Operation against a key"), PeerError),
        (redis_errors.RedisError(), PeerError),
    ],
)
def test_redis_errors_map_to_blocks_errors(raised: Exception, expected: type) -> None:
    with pytest.raises(expected) as caught, rediscall.redis_call("test"):
        raise raised
    assert isinstance(caught.value, BlocksError) and caught.value.__cause__ is raised
    assert "redis test" in str(caught.value)


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), rediscall.redis_call("test"):
        raise KeyError("not a redis error")
