"""A replicated-queue node that snapshots often and cuts small segments, for the snapshot tests."""

from __future__ import annotations

import random
from pathlib import Path

from blocks.core.memory_network import MemoryNetwork
from blocks.pubsub.replication import ReplicationConfig
from blocks.queue.replicated import ReplicatedQueue


def snapshotting_node(
    root: Path, network: MemoryNetwork, nodes: list[str], name: str, timing: ReplicationConfig
) -> ReplicatedQueue:
    """Node ``name`` of ``nodes`` under ``root``: a snapshot every 20 applied records, 1 KiB
    segments (so cuts below a snapshot really drop segments)."""
    return ReplicatedQueue(
        root / name,
        network.transport(name),
        nodes,
        rng=random.Random(name),
        replication=timing,
        snapshot_every=20,
        segment_bytes_max=1_024,
    )
