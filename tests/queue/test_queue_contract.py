"""The queue contract against the in-memory and the durable ``LocalQueue``."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import settings

from blocks.queue.api import Queue
from blocks.queue.contract import QueueContract
from blocks.queue.local import LocalQueue


class MemoryQueueContract(QueueContract):
    async def make_subject(self) -> Queue:
        return LocalQueue(clock=self.clock)


class DurableQueueContract(QueueContract):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="queue-contract-")

    async def make_subject(self) -> Queue:
        return LocalQueue(self.directory, clock=self.clock, fsync="never", snapshot_every=7)

    async def restart_subject(self, queue: Queue) -> Queue | None:
        await queue.close()
        return LocalQueue(self.directory, clock=self.clock, fsync="never", snapshot_every=7)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


TestMemoryQueueContract = MemoryQueueContract.TestCase
TestMemoryQueueContract.settings = settings(
    settings.default,
    stateful_step_count=80,  # the profile's programs (150 under dev)
)
TestDurableQueueContract = DurableQueueContract.TestCase
# The rules are the memory run's, which explores them with the full budget; what the durable
# run adds is reopening (a rule of its own) and snapshots (every 7 records), which a third
# of the profile's programs, 60 steps each, reach many times over. The time goes into
# hypothesis's drawing per step (profiled), not the disk: a third of the programs is about
# a third of the time.
TestDurableQueueContract.settings = settings(
    settings.default,
    max_examples=max(10, settings.default.max_examples // 3),
    stateful_step_count=60,
)
