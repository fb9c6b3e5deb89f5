"""The blocks behind the YouTube design, built for one backend and wired to the app.

Theory of operation. ``start_stack`` asks ``examples.backends.Blocks`` for one block per role
and returns a ``Stack`` of them; everything started is registered with the caller's
``Services`` so it stops when they close, even if a later block fails to start. The table is
the ``cluster`` backend (the default); ``local`` runs the same blocks in this process without
sockets, ``engines`` puts them on NATS, Redis and an S3 endpoint (``stack.placement`` says
exactly where each one ended up).

=================  =============================================  ==========================
role               block (``cluster``)                            shape here
=================  =============================================  ==========================
video bytes        ``blocks.blob`` behind its S3 HTTP API         1 node, Reed-Solomon 2+1
transcoding jobs   ``blocks.queue`` server                        1 durable broker
video metadata     ``blocks.kv`` ``LocalCluster``                 3 nodes over TCP, N=3 R=2 W=2
metadata cache     ``blocks.cache`` servers + ``ClusterClient``   2 nodes, ketama placement
views and trends   ``blocks.counters`` servers                    2 nodes, names sharded
title search       ``blocks.search`` server (BM25 + typeahead)    1 node
video ids          ``blocks.sequencer`` server (Snowflake)        1 node, leased worker id
=================  =============================================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blocks.queue.api import Queue
from examples.backends import Backend, Blocks, ObjectFactory, Placement
from examples.common import BlockingCalls, Services
from examples.ports import (
    CacheStore,
    CountersStore,
    IdSource,
    ObjectStore,
    TextSearch,
    VersionedStore,
)

__all__ = ["ACCESS_KEY", "BUCKET", "SECRET_KEY", "Stack", "start_stack"]

ACCESS_KEY, SECRET_KEY = "youtube-upload", "youtube-secret"
BUCKET = "videos"
CACHE_NODES = 2
COUNTER_NODES = 2
BLOCKING_THREADS = 4


@dataclass(frozen=True, slots=True)
class Stack:
    """Every block of the design (owned by the ``Services``) and where each one runs."""

    objects: ObjectFactory
    queue: Queue
    kv: VersionedStore
    cache: CacheStore
    counters: dict[str, CountersStore]
    search: TextSearch
    sequencer: IdSource
    blocking: BlockingCalls
    placement: Placement

    def open_objects(self) -> ObjectStore:
        """A new object-store handle (one per thread: an S3 handle is one HTTP connection)."""
        return self.objects()


async def start_stack(
    services: Services, directory: Path, backend: Backend | str = Backend.CLUSTER
) -> Stack:
    """Build every block of the design on ``backend`` with its data under ``directory``."""
    blocks = Blocks(backend, services, directory)
    blocking = BlockingCalls(BLOCKING_THREADS, "youtube-clients")
    services.defer("client-threads", blocking.close)
    objects = await blocks.objects("blob", BUCKET, ACCESS_KEY, SECRET_KEY)
    queue = await blocks.queue("queue")
    kv = await blocks.kv("kv")
    cache = await blocks.cache("cache", nodes=CACHE_NODES)
    counters = await blocks.counters("counters", nodes=COUNTER_NODES)
    search = await blocks.search("search")
    sequencer = await blocks.ids("sequencer")
    return Stack(objects, queue, kv, cache, counters, search, sequencer, blocking, blocks.placement)
