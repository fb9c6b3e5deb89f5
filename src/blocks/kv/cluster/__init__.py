"""The Dynamo-style cluster: a pure core, the membership it runs over, and the asyncio driver.

Without I/O: ``KVNodeCore`` (``node.py``: coordinator and replica logic, hinted handoff, read
repair; ``anti_entropy.py`` and ``merkle.py`` for the Merkle exchange; ``quorum.py`` for
placement and hints; ``messages.py`` for what cores send each other) and ``Membership``
(``membership.py``: gossip and failure detection). The data model: dotted version vectors
(``versions.py``) stamped with hybrid logical clocks (``hlc.py``), dots leased durably ahead of
use (``dot_lease.py``).

With I/O: ``KVNode`` (``driver.py``, with ``driver_config.py``, ``driver_io.py`` and
``driver_handlers.py``, which answers clients) runs both cores over a transport; the replicas
live in an ``ObjectStore`` (``persist.py``, a Bitcask from ``blocks.kv.engine`` on disk).
Messages travel as msgpack lists: ``peer_wire.py`` between nodes, ``client_wire.py`` between
a client and a node. ``blocks.kv`` exports the names below.
"""

from blocks.kv.cluster.client_wire import PutResult
from blocks.kv.cluster.driver import KVNode
from blocks.kv.cluster.driver_config import NodeConfig
from blocks.kv.cluster.hlc import HlcTimestamp, HybridLogicalClock
from blocks.kv.cluster.membership import (
    MemberRecord,
    Membership,
    MembershipConfig,
    MemberStatus,
)
from blocks.kv.cluster.merkle import MerkleTree, differing_leaves
from blocks.kv.cluster.node import KVNodeCore
from blocks.kv.cluster.quorum import QuorumConfig, plan_targets
from blocks.kv.cluster.versions import (
    Dot,
    Sibling,
    VersionedObject,
    VersionVector,
    merge,
    update,
)

__all__ = [
    "Dot",
    "HlcTimestamp",
    "HybridLogicalClock",
    "KVNode",
    "KVNodeCore",
    "MemberRecord",
    "MemberStatus",
    "Membership",
    "MembershipConfig",
    "MerkleTree",
    "NodeConfig",
    "PutResult",
    "QuorumConfig",
    "Sibling",
    "VersionVector",
    "VersionedObject",
    "differing_leaves",
    "merge",
    "plan_targets",
    "update",
]
