"""Runs the public counters contract against every implementation."""

from __future__ import annotations

import random

from blocks.counters.api import Counters
from blocks.counters.contract import CountersContract
from blocks.counters.gossip import GossipReplica
from blocks.counters.local import LocalCounters, ShardedCounters


class GossipCluster:
    """Three replicas; writes and reads go to a random one; settle() runs gossip rounds."""

    def __init__(self, seed: int) -> None:
        names = ["a", "b", "c"]
        self.rng = random.Random(seed)
        self.replicas = {
            n: GossipReplica(
                n, [p for p in names if p != n], rng=random.Random(f"{seed}{n}"), fanout=1
            )
            for n in names
        }

    def increment(self, name: str, amount: int = 1) -> int:
        return self.rng.choice(list(self.replicas.values())).increment(name, amount)

    def value(self, name: str) -> int:
        return self.rng.choice(list(self.replicas.values())).value(name)

    def settle(self) -> None:
        for _ in range(50):
            if (
                len(
                    {
                        tuple(sorted((k, v.value) for k, v in r.state().items()))
                        for r in self.replicas.values()
                    }
                )
                == 1
            ):
                return
            queue = [(r.name, out) for r in self.replicas.values() for out in r.tick().messages]
            while queue:
                source, (dest, message) = queue.pop(0)
                queue.extend(
                    (dest, reply)
                    for reply in self.replicas[dest].handle_message(source, message).messages
                )
        raise AssertionError("gossip did not converge in 50 rounds")


class Local(CountersContract):
    def make_subject(self) -> Counters:
        return LocalCounters()


class Sharded(CountersContract):
    def make_subject(self) -> Counters:
        self.sharded = ShardedCounters(4, rng=random.Random(0))
        return self.sharded

    def settle(self) -> None:
        # Resizing while running is part of the contract for this implementation.
        self.sharded.resize(1 + (self.sharded.shards * 7) % 9)


class Gossip(CountersContract):
    def make_subject(self) -> Counters:
        self.cluster = GossipCluster(seed=1)
        return self.cluster

    def settle(self) -> None:
        self.cluster.settle()


TestLocal = Local.TestCase
TestSharded = Sharded.TestCase
TestGossip = Gossip.TestCase
