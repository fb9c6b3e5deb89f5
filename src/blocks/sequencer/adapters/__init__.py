"""The sequencer's worker-id leases on engines users already run:
``blocks.sequencer.adapters.redis`` (needs the ``redis`` client). Import the engine's module
itself; this package imports nothing, so a missing client library breaks nothing else."""

__all__: list[str] = []
