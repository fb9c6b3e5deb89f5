"""The ``blocks.cache`` API on engines users already run: ``blocks.cache.adapters.redis``
(Redis, needs the ``redis`` client). Import the engine's module itself; this package imports
nothing, so a missing client library breaks nothing else."""

__all__: list[str] = []
