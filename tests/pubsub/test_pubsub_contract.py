"""The pub-sub contract against the in-memory and the durable ``LocalBroker`` and against a
replicated ``ClusterBroker``."""

from __future__ import annotations

import random
import shutil
import tempfile

from hypothesis import settings

from blocks.core.clock import ManualClock, SystemClock
from blocks.core.memory_network import MemoryNetwork
from blocks.pubsub.api import PubSub
from blocks.pubsub.cluster import ClusterBroker, ReplicationConfig
from blocks.pubsub.contract import SESSION_TIMEOUT_MS, PubSubContract
from blocks.pubsub.local import LocalBroker


class MemoryPubSubContract(PubSubContract):
    async def make_subject(self) -> PubSub:
        return LocalBroker(clock=self.clock, session_timeout_ms=SESSION_TIMEOUT_MS)


class DurablePubSubContract(PubSubContract):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="pubsub-contract-")

    def _open(self, clock: ManualClock) -> LocalBroker:
        return LocalBroker(
            self.directory,
            clock=clock,
            fsync="never",
            session_timeout_ms=SESSION_TIMEOUT_MS,
            segment_bytes_max=256,
        )

    async def make_subject(self) -> PubSub:
        return self._open(self.clock)

    async def restart_subject(self, pubsub: PubSub) -> PubSub | None:
        await pubsub.close()
        return self._open(self.clock)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


TestMemoryPubSubContract = MemoryPubSubContract.TestCase
TestMemoryPubSubContract.settings = settings(settings.default, stateful_step_count=60)
TestDurablePubSubContract = DurablePubSubContract.TestCase
# The memory run explores the rules with the profile's full budget; the durable run adds
# restarts and segment rolls (256-byte segments), which a third of the programs reach many
# times over.
TestDurablePubSubContract.settings = settings(
    settings.default,
    max_examples=max(10, settings.default.max_examples // 3),
    stateful_step_count=40,
)


class ClusterPubSubContract(PubSubContract):
    """The contract against one broker of a three-broker cluster on an in-memory network;
    replication keeps real time so that elections never fire between steps."""

    def __init__(self) -> None:
        super().__init__()
        self.others: list[ClusterBroker] = []

    async def make_subject(self) -> PubSub:
        clock = self.clock
        network = MemoryNetwork(seed=1)
        timing = ReplicationConfig(election_timeout_ms=5_000, lag_max_ms=10_000)
        brokers = [
            ClusterBroker(
                None,
                network.transport(name),
                ["b1", "b2", "b3"],
                clock=clock,
                replication_clock=SystemClock(),
                rng=random.Random(name),
                replication=timing,
                session_timeout_ms=SESSION_TIMEOUT_MS,
            )
            for name in ("b1", "b2", "b3")
        ]
        for broker in brokers:
            broker.start()
        self.others = brokers[1:]
        return brokers[0]

    def teardown(self) -> None:
        try:
            for broker in [self.pubsub, *self.others]:
                if isinstance(broker, ClusterBroker):
                    self.run(broker.close())
                    self.run(broker.transport.close())
        finally:
            super().teardown()


TestClusterPubSubContract = ClusterPubSubContract.TestCase
# The same rules through a replicated broker (forwarding, the leader's high watermark):
# half the profile's programs.
TestClusterPubSubContract.settings = settings(
    settings.default,
    max_examples=max(10, settings.default.max_examples // 2),
    stateful_step_count=30,
    deadline=None,
)
