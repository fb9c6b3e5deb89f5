"""The ``blocks.pubsub`` API on engines users already run: ``blocks.pubsub.adapters.nats``
(NATS JetStream, needs ``nats-py``). Import the engine's module itself; this package imports
nothing, so a missing client library breaks nothing else."""

__all__: list[str] = []
