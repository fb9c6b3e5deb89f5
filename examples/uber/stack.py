"""The servers behind the Uber design, started on 127.0.0.1 and wired to clients.

=====================  ============================================  ========================
role                   block                                         shape here
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

from blocks.kv.client import KVClient
from blocks.kv.local import LocalCluster
from blocks.pubsub.client import PubSubClient
from blocks.pubsub.client import connect as connect_pubsub
from blocks.pubsub.service import build_server as build_pubsub_server
from blocks.ratelimit.bucket import TokenBucket
from blocks.ratelimit.client import RateLimitClient
from blocks.ratelimit.service import build_server as build_ratelimit_server
from blocks.sequencer.client import SequencerClient
from blocks.sequencer.service import build_server as build_sequencer_server
from examples.common import Services

__all__ = ["LOCATIONS", "PARTITIONS", "Stack", "start_stack"]

LOCATIONS = "driver-locations"
PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class Stack:
    pubsub: PubSubClient
    kv: KVClient
    ratelimit: RateLimitClient
    sequencer: SequencerClient
    pubsub_address: str


async def start_stack(
    services: Services, directory: Path, *, rides_per_s: float, ride_burst: int
) -> Stack:
    """Start every server with data under ``directory``; riders may request ``ride_burst``
    rides at once and ``rides_per_s`` sustained."""
    pubsub_server, _ = build_pubsub_server(directory / "pubsub", fsync="never")
    pubsub_address = await services.start(pubsub_server, "pubsub")
    pubsub = await connect_pubsub([pubsub_address])
    services.defer("pubsub-client", pubsub.close)
    await pubsub.create_topic(LOCATIONS, partitions=PARTITIONS, retention_ms=3_600_000)

    cluster = LocalCluster(nodes=3, replicas=3, read_quorum=2, write_quorum=2, transport="tcp")
    await cluster.start()
    services.defer("kv", cluster.stop)

    limiter_server, _ = build_ratelimit_server(
        TokenBucket(rate_per_s=rides_per_s, burst=ride_burst)
    )
    ratelimit = RateLimitClient(await services.start(limiter_server, "ratelimit"))
    services.defer("ratelimit-client", ratelimit.close)

    sequencer_dir = directory / "sequencer"
    sequencer_dir.mkdir(parents=True, exist_ok=True)
    sequencer_server, _ = build_sequencer_server(str(sequencer_dir), fsync=False)
    sequencer = SequencerClient(await services.start(sequencer_server, "sequencer"))
    services.defer("sequencer-client", sequencer.close)
    return Stack(pubsub, cluster.client(), ratelimit, sequencer, pubsub_address)
