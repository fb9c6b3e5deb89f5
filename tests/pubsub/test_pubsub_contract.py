"""The pub-sub contract against the in-memory and the durable ``LocalBroker``."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import settings

from blocks.core.clock import ManualClock
from blocks.pubsub.api import PubSub
from blocks.pubsub.contract import SESSION_TIMEOUT_MS, PubSubContract
from blocks.pubsub.local import LocalBroker


class MemoryPubSubContract(PubSubContract):
    async def make_pubsub(self, clock: ManualClock) -> PubSub:
        return LocalBroker(clock=clock, session_timeout_ms=SESSION_TIMEOUT_MS)


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

    async def make_pubsub(self, clock: ManualClock) -> PubSub:
        return self._open(clock)

    async def restart(self, pubsub: PubSub, clock: ManualClock) -> PubSub | None:
        await pubsub.close()
        return self._open(clock)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


TestMemoryPubSubContract = MemoryPubSubContract.TestCase
TestMemoryPubSubContract.settings = settings(settings.default, stateful_step_count=60)
TestDurablePubSubContract = DurablePubSubContract.TestCase
TestDurablePubSubContract.settings = settings(settings.default, stateful_step_count=40)
