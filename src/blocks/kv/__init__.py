"""kv: a Dynamo-style replicated key-value store on a Bitcask engine.

Two products share the package. ``Bitcask`` (``blocks.kv.engine``) is the embedded
single-node engine; ``KeyValueStore`` (``api.py``) is the interface it implements and
``blocks.kv.contract`` checks any implementation against a dict. The cluster
(``blocks.kv.cluster``) is ``KVNodeCore`` (dotted version vectors, sloppy quorum, hinted
handoff, read repair, Merkle anti-entropy) and ``Membership`` (gossip, failure detection),
both logic without I/O, driven by ``KVNode`` over any transport. ``LocalCluster``
(``local_cluster.py``) runs several nodes in one process; ``blocks kv serve`` runs them as
processes; ``connect`` (async, ``client.py``) and ``SyncClient`` (blocking,
``blocking_client.py``) reach them.
"""

from blocks.kv.api import KeyValueStore
from blocks.kv.blocking_client import SyncClient
from blocks.kv.client import KVClient, Versioned, connect
from blocks.kv.cluster import (
    Dot,
    HlcTimestamp,
    HybridLogicalClock,
    KVNode,
    KVNodeCore,
    MemberRecord,
    Membership,
    MembershipConfig,
    MemberStatus,
    MerkleTree,
    NodeConfig,
    PutResult,
    QuorumConfig,
    Sibling,
    VersionedObject,
    VersionVector,
    differing_leaves,
    merge,
    plan_targets,
    update,
)
from blocks.kv.engine import Bitcask, BitcaskStats, SyncPolicy
from blocks.kv.local_cluster import LocalCluster

__all__ = [
    "Bitcask",
    "BitcaskStats",
    "Dot",
    "HlcTimestamp",
    "HybridLogicalClock",
    "KVClient",
    "KVNode",
    "KVNodeCore",
    "KeyValueStore",
    "LocalCluster",
    "MemberRecord",
    "MemberStatus",
    "Membership",
    "MembershipConfig",
    "MerkleTree",
    "NodeConfig",
    "PutResult",
    "QuorumConfig",
    "Sibling",
    "SyncClient",
    "SyncPolicy",
    "VersionVector",
    "Versioned",
    "VersionedObject",
    "connect",
    "differing_leaves",
    "merge",
    "plan_targets",
    "update",
]
