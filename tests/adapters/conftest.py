"""Real engines for the adapter tests, one of each per session: a ``nats-server -js`` and a
``redis-server`` (append-only file, fsync per write); each is skipped, with the reason, where
its binary or client is not installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.testing.engines import NatsServer, RedisServer, nats_missing, redis_missing

NATS_MISSING = nats_missing()
REDIS_MISSING = redis_missing()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    if NATS_MISSING is not None:
        pytest.skip(NATS_MISSING)
    with NatsServer(tmp_path_factory.mktemp("nats-store")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_MISSING is not None:
        pytest.skip(REDIS_MISSING)
    with RedisServer(tmp_path_factory.mktemp("redis-store")) as server:
        yield server
