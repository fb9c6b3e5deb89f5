"""A client keeps working across a broker's restart on the framed data path.

A restarted ``blocks pubsub serve`` greets under a new data-path node name. The client used to
keep dialling the old name and failed every call with ``PeerError`` for ever; it now asks the
broker for its data path again, so a caller that retries ``Unavailable`` gets through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from blocks.core.errors import Unavailable
from blocks.pubsub.client import connect
from blocks.testing import ProcessCluster
from blocks.testing.servers import pubsub_spec

pytestmark = pytest.mark.process


@pytest.fixture
def broker(tmp_path: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(pubsub_spec(), ["b1"], tmp_path) as nodes:  # type: ignore[arg-type]
        nodes.start_all()
        yield nodes


def test_the_data_path_client_recovers_from_a_broker_restart(broker: ProcessCluster) -> None:
    async def run() -> list[bytes]:
        client = await connect(broker.address("b1"), token=broker.token, timeout_s=3.0)
        try:
            await client.create_topic("restart-probe", partitions=1)
            await client.produce("restart-probe", b"before", partition=0)
            await asyncio.to_thread(broker.restart, "b1")
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    await client.produce("restart-probe", b"after", partition=0)
                    break
                except Unavailable:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            records = await client.fetch("restart-probe", 0, 0, 10)
            return [record.value for record in records]
        finally:
            await client.close()

    with broker.failure_notes("pubsub data path after a restart"):
        values = asyncio.run(run())
    assert values[0] == b"before" and values[-1] == b"after"
