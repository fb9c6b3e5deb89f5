"""A partitioned, replayable log: topics, idempotent producers, consumer groups.

``LocalBroker`` is the in-process broker (durable on ``blocks.core.log`` with a directory),
``blocks.pubsub.cluster.ClusterBroker`` a broker whose partitions replicate to its peers
(leaders, in-sync replicas, ``acks=all``, elections with epochs), ``connect`` a client of
one or more pub-sub servers, ``Consumer`` a group member as an async iterator,
and ``blocks.pubsub.checker`` checks recorded histories for lost, duplicated or skipped
records.
"""
