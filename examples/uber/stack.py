"""The blocks behind the Uber design, built for one backend and wired to the dispatcher.

The table is the ``cluster`` backend (the default); ``local`` runs the same blocks in this
process without sockets, ``engines`` puts them on NATS JetStream and Redis
(``stack.placement`` says exactly where each one ended up; see ``examples/backends.py``).

=====================  ============================================  ========================
role                   block (``cluster``)                           shape here
=====================  ============================================  ========================
driver location feed   ``blocks.pubsub`` broker, topic partitioned   1 broker, 4 partitions,
                       by city                                       durable log
trip ids               ``blocks.sequencer`` server (Snowflake)       1 node, leased worker id
ride request limits    ``blocks.ratelimit`` server (token bucket)    1 node, a bucket per rider
trip state             ``blocks.kv`` ``LocalCluster``                3 nodes over TCP, N=3
                                                                     R=2 W=2, version vectors
geo index              ``examples.uber.geo.GeoIndex``                in the dispatcher
=====================  ============================================  ========================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blocks.pubsub.api import PubSub
from examples.backends import Backend, Blocks, Placement
from examples.common import Services
from examples.ports import IdSource, Limiter, VersionedStore

__all__ = ["LOCATIONS", "PARTITIONS", "Stack", "start_stack"]

LOCATIONS = "driver-locations"
PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class Stack:
    pubsub: PubSub
    kv: VersionedStore
    ratelimit: Limiter
    sequencer: IdSource
    placement: Placement


async def start_stack(
    services: Services,
    directory: Path,
    *,
    rides_per_s: float,
    ride_burst: int,
    backend: Backend | str = Backend.CLUSTER,
) -> Stack:
    """Build every block on ``backend`` with data under ``directory``; riders may request
    ``ride_burst`` rides at once and ``rides_per_s`` sustained."""
    blocks = Blocks(backend, services, directory)
    pubsub = await blocks.pubsub("pubsub")
    await pubsub.create_topic(LOCATIONS, partitions=PARTITIONS, retention_ms=3_600_000)
    kv = await blocks.kv("kv")
    ratelimit = await blocks.limiter("ratelimit", rate_per_s=rides_per_s, burst=ride_burst)
    sequencer = await blocks.ids("sequencer")
    return Stack(pubsub, kv, ratelimit, sequencer, blocks.placement)
