"""A durable work queue: visibility timeouts, receive counts, dead letters, FIFO groups.

``QueueState`` is one queue as a pure state machine, ``QueueBroker`` many queues behind a
replayable command interface, ``LocalQueue`` the in-process (optionally durable) broker with
long polling, and ``connect`` a client for a queue server.
"""
