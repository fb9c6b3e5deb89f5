"""The ``blocks.kv`` API on engines users already run: ``blocks.kv.adapters.redis``
(standalone Redis and Redis Cluster, needs the ``redis`` client). Import the engine's module
itself; this package imports nothing, so a missing client library breaks nothing else."""

__all__: list[str] = []
