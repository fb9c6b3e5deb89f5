"""kv: a Dynamo-style replicated key-value store on a Bitcask engine.

``Bitcask`` is the embedded single-node engine; ``KeyValueStore`` (``api.py``) is the
interface it implements and ``blocks.kv.contract`` checks any implementation against a dict.
The cluster is ``KVNodeCore`` (dotted version vectors, sloppy quorum, hinted handoff, read
repair, Merkle anti-entropy) and ``Membership`` (gossip, failure detection), both logic without
I/O, driven by ``KVNode`` over any transport. ``LocalCluster`` runs nodes in-process;
``blocks kv serve`` runs them as processes; ``connect`` (async) and ``SyncClient`` reach them.
"""

from blocks.kv.api import KeyValueStore
from blocks.kv.bitcask import Bitcask, BitcaskStats, SyncPolicy
from blocks.kv.client import KVClient, Versioned, connect
from blocks.kv.driver import KVNode, NodeConfig
from blocks.kv.hlc import HlcTimestamp, HybridLogicalClock
from blocks.kv.local import LocalCluster
from blocks.kv.membership import MemberRecord, Membership, MembershipConfig, MemberStatus
from blocks.kv.merkle import MerkleTree, differing_leaves
from blocks.kv.node import KVNodeCore, QuorumConfig, plan_targets
from blocks.kv.requests import PutResult
from blocks.kv.sync import SyncClient
from blocks.kv.versions import Dot, Sibling, VersionedObject, VersionVector, merge, update

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
