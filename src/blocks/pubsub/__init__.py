"""A partitioned, replayable log: topics, idempotent producers, consumer groups.

``LocalBroker`` is the in-process broker (durable on ``blocks.core.log`` with a directory),
``blocks.pubsub.cluster.ClusterBroker`` a broker whose partitions replicate to its peers
(leaders, in-sync replicas, ``acks=all``, elections with epochs), ``connect`` a client of one
or more pub-sub servers (its batching producer tuned by ``ProducerConfig``), ``Consumer`` a
group member as an async iterator, and ``blocks.pubsub.checker`` checks recorded histories for
lost, duplicated or skipped records. ``Role``, ``TopicConfig``, ``ReplicationConfig`` and
``StoredRecord`` are what a block that runs its own replicated log on ``ClusterBroker`` needs
(the replicated queue does).
"""

from blocks.pubsub.api import Assignment, PubSub, Record
from blocks.pubsub.batching_producer import ProducerConfig
from blocks.pubsub.client import PubSubClient, connect
from blocks.pubsub.cluster import ClusterBroker, ReplicationConfig
from blocks.pubsub.consumer import Consumer
from blocks.pubsub.contract import PubSubContract
from blocks.pubsub.local import LocalBroker
from blocks.pubsub.record import StoredRecord
from blocks.pubsub.replica import Role
from blocks.pubsub.sync import SyncPubSub
from blocks.pubsub.topics import TopicConfig, check_entries

__all__ = [
    "Assignment",
    "ClusterBroker",
    "Consumer",
    "LocalBroker",
    "ProducerConfig",
    "PubSub",
    "PubSubClient",
    "PubSubContract",
    "Record",
    "ReplicationConfig",
    "Role",
    "StoredRecord",
    "SyncPubSub",
    "TopicConfig",
    "check_entries",
    "connect",
]
