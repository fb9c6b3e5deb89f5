"""The ``blocks.queue`` API on engines users already run: ``blocks.queue.adapters.nats``
(NATS JetStream work queues, needs ``nats-py``). This package imports nothing, so a missing
client library breaks nothing else."""

__all__: list[str] = []
