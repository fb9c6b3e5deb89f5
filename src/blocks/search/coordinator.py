"""A coordinator over shard processes: ring routing, exact scatter-gather, deadline, hedging.

Theory of operation. ``blocks search serve --remote-shards a=A1+A2,b=B1`` starts a node whose
vector index is a ``Coordinator``: shard ``a`` is served by the replicas ``A1`` and ``A2``
(ordinary ``serve --data-dir`` nodes holding the same vectors, each logging and snapshotting
its own), shard ``b`` by ``B1``. The coordinator holds no vectors or documents; given a data
directory it keeps its typeahead counts there (``blocks.search.coordinator_node``).

* **Routing**: an id belongs to the shard that ``ShardRing`` (the core consistent-hash ring
  over the shard *names*) gives it, so adding a shard moves only about ``1/(n+1)`` of the ids.
* **Writes go to every replica of the owning shard** at once, and are acknowledged only when
  all of them acknowledged (each has logged and fsynced it). Reads ask one replica per shard,
  so an acknowledged vector is in every answer that has its shard. The price: a write fails
  (``Unavailable``) while any replica of its shard is down. A failed write is undone on the
  replicas that took it, best effort; if the undo fails too, it may remain on some replicas
  (an unknown outcome, as for any failed write).
* **Search** is a ``ScatterGather`` (``blocks.search.scatter``) driven by the ``Coordinator``
  (``blocks.search.coordinator_index``): one call per shard to a rotating first replica, a
  hedge to the next replica after the ``HedgeDelay``, the first answer wins and the other
  call is cancelled, fail-over at once on a retryable error.
  The answers are merged exactly by ``merge_topk`` (metric direction, ties by id), so with
  every shard present the result equals brute force over the union.
* **Deadline**: a search ends by ``deadline_ms`` (or the caller's shorter one). Shards without
  an answer by then, or whose replicas all failed, are *missing*: with ``allow_partial`` the
  answer is returned flagged ``partial`` with their positions and names, otherwise
  ``Timeout``/``Unavailable`` naming them is raised.
* **Shared IVF** (shards started with ``--kind shared-ivf``): one set of centroids for the
  whole collection, trained here once and kept by the shards; each search's probe lists are
  chosen here once and each shard scans only those (``blocks.search.coarse``). On connect
  the centroids are read back from the shards and given to a shard that has none.
* **Documents** are routed by the same ring and searched over every shard by the node the
  coordinator serves, a ``CoordinatorNode`` (``blocks.search.coordinator_node``).

This module parses ``--remote-shards`` and connects; the pieces live in the modules named.
"""

from __future__ import annotations

from blocks.core.errors import BlocksError, InvalidArgument, Unavailable
from blocks.search import search_pb2
from blocks.search.api import Metric
from blocks.search.coarse import COARSE_THREADS_DEFAULT, CoarseQuantizer, sync_centroids
from blocks.search.coordinator_index import DEADLINE_MS_DEFAULT, Coordinator
from blocks.search.datapath import DataPathClient
from blocks.search.pipeline import PIPELINE_DEPTH_DEFAULT, PIPELINE_ROWS_DEFAULT
from blocks.search.replica_link import ReplicaLink
from blocks.search.routing import ShardRing, default_shard_names
from blocks.search.scatter import HedgeDelay
from blocks.search.sharded import SHARDS_MAX

__all__ = [
    "DEADLINE_MS_DEFAULT",
    "REPLICAS_MAX",
    "Coordinator",
    "connect_shards",
    "parse_named_shards",
    "parse_shards",
]

REPLICAS_MAX = 16
ADDRESS_CHARS_MAX = 255


def parse_named_shards(spec: str) -> list[tuple[str, list[str]]]:
    """``"a=A+B,C"`` -> ``[("a", ["A", "B"]), ("shard-1", ["C"])]``; names default to
    ``shard-<position>``. Raises ``InvalidArgument`` for a malformed spec."""
    groups = [group.strip() for group in spec.split(",")]
    if not 1 <= len(groups) <= SHARDS_MAX:
        raise InvalidArgument(f"--remote-shards needs 1..{SHARDS_MAX} shards")
    shards = []
    for default, group in zip(default_shard_names(len(groups)), groups, strict=True):
        name, equals, addresses = group.rpartition("=")
        replicas = [address.strip() for address in addresses.split("+")]
        if not 1 <= len(replicas) <= REPLICAS_MAX:
            raise InvalidArgument(f"a shard has 1..{REPLICAS_MAX} replicas joined by '+'")
        for address in replicas:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or len(address) > ADDRESS_CHARS_MAX:
                raise InvalidArgument(f"shard address {address!r} is not HOST:PORT")
        shards.append((name.strip() if equals else default, replicas))
    ShardRing([name for name, _ in shards])  # checks the names
    return shards


def parse_shards(spec: str) -> list[list[str]]:
    """``"A+B,C"`` -> ``[["A", "B"], ["C"]]`` (the addresses of ``parse_named_shards``)."""
    return [replicas for _, replicas in parse_named_shards(spec)]


def _shared_ivf(
    layouts: set[tuple[bool, int]], links: list[ReplicaLink], metric: Metric, timeout_s: float
) -> tuple[int, CoarseQuantizer | None]:
    """(nlist, centroids) when every shard is a shared IVF (``blocks.search.coarse``): the
    centroids read back from the shards, and given to those that lack them; (0, None) when
    none is. ``InvalidArgument`` for a mix or for shards that disagree on ``nlist``."""
    if not any(shared for shared, _ in layouts):
        return 0, None
    if len(layouts) != 1:
        raise InvalidArgument(f"shards must all be shared-ivf of one nlist: {sorted(layouts)}")
    ((_, nlist),) = layouts
    return nlist, sync_centroids(links, metric, timeout_s)


def connect_shards(
    spec: str,
    *,
    token: str | None = None,
    timeout_ms: int = 10_000,
    deadline_ms: int = DEADLINE_MS_DEFAULT,
    hedge_ms: int | None = None,
    coarse_threads: int = COARSE_THREADS_DEFAULT,
    pipeline_rows: int = PIPELINE_ROWS_DEFAULT,
    pipeline_depth: int = PIPELINE_DEPTH_DEFAULT,
) -> Coordinator:
    """A ``Coordinator`` over the shards of ``spec`` (``parse_named_shards``).

    Asks each replica its dimension and metric; raises ``InvalidArgument`` when they
    disagree, ``Unavailable`` when a shard has no replica that answers. ``hedge_ms`` ``None``:
    adaptive hedging (``HedgeDelay``). Searches go to each replica's data path where it
    announces one (``blocks.search.datapath``), else over gRPC.
    """
    links: list[ReplicaLink] = []
    data_path = DataPathClient(token=token)
    try:
        shards: list[tuple[str, list[ReplicaLink]]] = []
        for name, addresses in parse_named_shards(spec):
            group = [ReplicaLink(address, token=token) for address in addresses]
            links += group
            shards.append((name, group))
        shapes = set()
        layouts = set()  # (kind is shared-ivf, nlist) per answering replica
        for name, group in shards:
            answered = False
            for link in group:
                try:
                    info = link.call("Info", search_pb2.InfoRequest(), timeout_ms / 1000)
                except BlocksError as error:
                    if not error.retryable:
                        raise
                    link.use_data_path(data_path, None)  # asked again once it answers
                    continue
                link.use_data_path(data_path, int(info.data_port))
                shapes.add((int(info.dim), str(info.metric)))
                layouts.add((int(info.nlist) > 0, int(info.nlist)))
                answered = True
            if not answered:
                raise Unavailable(f"shard {name}: no replica answered")
        if len(shapes) != 1:
            raise InvalidArgument(f"shards disagree on dim and metric: {sorted(shapes)}")
        ((dim, metric),) = shapes
        nlist, coarse = _shared_ivf(layouts, links, Metric.parse(metric), timeout_ms / 1000)
        return Coordinator(
            shards,
            dim=dim,
            metric=metric,
            deadline_ms=deadline_ms,
            hedge=HedgeDelay(hedge_ms),
            nlist=nlist,
            coarse=coarse,
            coarse_threads=coarse_threads,
            pipeline_rows=pipeline_rows,
            pipeline_depth=pipeline_depth,
            data_path=data_path,
        )
    except BaseException:
        for link in links:
            link.close()
        data_path.close()
        raise
