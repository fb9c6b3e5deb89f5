"""Workloads that drive each block through its public client and record a ``History``:
kv, pubsub, queue, blob, counters, sequencer; and ``run_under_nemesis``, the body of a
nemesis test. Each workload's module docstring states what its verdict checks."""

from blocks.testing.workloads.base import Verdict, Workload, run_under_nemesis
from blocks.testing.workloads.blob import BlobWorkload
from blocks.testing.workloads.counters import CountersWorkload
from blocks.testing.workloads.kv import KvWorkload
from blocks.testing.workloads.pubsub import PubSubWorkload
from blocks.testing.workloads.queue import QueueWorkload
from blocks.testing.workloads.sequencer import SequencerWorkload

__all__ = [
    "BlobWorkload",
    "CountersWorkload",
    "KvWorkload",
    "PubSubWorkload",
    "QueueWorkload",
    "SequencerWorkload",
    "Verdict",
    "Workload",
    "run_under_nemesis",
]
