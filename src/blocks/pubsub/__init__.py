"""A partitioned, replayable log: topics, idempotent producers, consumer groups.

``LocalBroker`` is the in-process broker (durable on ``blocks.core.log`` with a directory),
``connect`` a client of a pub-sub server, ``Consumer`` a group member as an async iterator,
and ``blocks.pubsub.checker`` checks recorded histories for lost, duplicated or skipped
records.
"""
