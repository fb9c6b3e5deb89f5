"""A durable work queue: visibility timeouts, receive counts, dead letters, FIFO groups.

``QueueState`` is one queue as a pure state machine, ``QueueBroker`` many queues behind a
replayable command interface, ``LocalQueue`` the in-process (optionally durable) broker with
long polling, and ``connect`` a client for a queue server.
"""

from blocks.queue.api import Message, Queue
from blocks.queue.broker import QueueBroker
from blocks.queue.client import QueueClient, connect
from blocks.queue.contract import QueueContract
from blocks.queue.local import LocalQueue
from blocks.queue.state import QueueState
from blocks.queue.sync import SyncQueue

__all__ = [
    "LocalQueue",
    "Message",
    "Queue",
    "QueueBroker",
    "QueueClient",
    "QueueContract",
    "QueueState",
    "SyncQueue",
    "connect",
]
