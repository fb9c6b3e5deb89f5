"""``NodeConfig``: the knobs of one ``KVNode`` driver, validated when built.

The quorum and membership settings belong to their cores (``QuorumConfig``,
``MembershipConfig``); the rest are the driver's own: how often it ticks, gossips and runs
anti-entropy, how large its ring is, and the bounds on what it buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blocks.core.errors import InvalidArgument
from blocks.kv.cluster.membership import MembershipConfig
from blocks.kv.cluster.quorum import QuorumConfig
from blocks.kv.limits import VALUE_BYTES_MAX_DEFAULT

__all__ = ["NodeConfig"]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    quorum: QuorumConfig = field(default_factory=QuorumConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    tick_s: float = 0.05
    """How often requests expire and hints are handed off."""
    gossip_interval_s: float = 0.2
    anti_entropy_interval_s: float = 2.0
    """How often the node runs one Merkle exchange with a random healthy peer."""
    vnodes: int = 64
    spares: int = 3
    """Nodes past the home list that may stand in for a down home node (sloppy quorum)."""
    value_bytes_max: int = VALUE_BYTES_MAX_DEFAULT
    outbox_max: int = 10_000
    """Messages queued per peer before new ones are dropped and counted."""

    def __post_init__(self) -> None:
        for name in ("tick_s", "gossip_interval_s", "anti_entropy_interval_s"):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"{name} must be > 0")
        if self.spares < 0 or self.outbox_max < 1 or self.value_bytes_max < 0:
            raise InvalidArgument("spares >= 0, outbox_max >= 1 and value_bytes_max >= 0")
