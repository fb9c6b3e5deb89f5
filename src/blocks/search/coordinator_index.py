"""``Coordinator``: a ``VectorIndex`` over shard processes (see ``blocks.search.coordinator``).

Theory of operation. Routing by ``ShardRing``; writes to every replica of the owning shard;
searches as a ``ScatterGather`` driven here with gRPC futures (so a hedge's loser can be
cancelled) and merged exactly by ``merge_topk``; the deadline and the partial flag as the
``blocks.search.coordinator`` docstring describes. A replica that failed or lost a hedge is
asked last for ``suspect_ms`` (1 s): a dead or stalled replica then costs a fail-over or a
hedge delay to about one search a second, not to every search that would pick it first.

Over shared-IVF shards (``shared_ivf``, ``blocks.search.coarse``) the coordinator holds the
collection's centroids: ``train`` runs the k-means once here and pushes the centroids to
every replica, and each search assigns every query its ``nprobe`` lists once and sends them
with the queries, so each shard scans only those lists of its own data.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import (
    BlocksError,
    FailedPrecondition,
    InvalidArgument,
    Timeout,
    Unavailable,
)
from blocks.search import search_pb2
from blocks.search.api import DimensionAndMetric, Filter, FloatArray, IdArray, Metric, SearchResult
from blocks.search.coarse import (
    COARSE_THREADS_DEFAULT,
    CoarseQuantizer,
    encode_probe_lists,
    train_centroids,
)
from blocks.search.datapath import DataPathClient
from blocks.search.merge import merge_topk
from blocks.search.pipeline import PIPELINE_DEPTH_DEFAULT, PIPELINE_ROWS_DEFAULT, SearchPipeline
from blocks.search.replica_link import ReplicaLink, outcome
from blocks.search.routing import ShardRing
from blocks.search.scatter import Cancel, HedgeDelay, ScatterGather, Send, replica_order
from blocks.search.vectors import as_ids, as_vectors, check_k
from blocks.search.where import (
    as_expression,
    attributes_to_wire,
    check_attribute_rows,
    fill_search_filter,
)
from blocks.search.wire import decode_reply, encode_batch, fill_batch

__all__ = [
    "DEADLINE_MS_DEFAULT",
    "SUSPECT_MS_DEFAULT",
    "WRITE_TIMEOUT_MS_DEFAULT",
    "Coordinator",
]

DEADLINE_MS_DEFAULT = 5_000
NPROBE_DEFAULT = 16  # a shared IVF's lists probed per query when a search names none
WRITE_TIMEOUT_MS_DEFAULT = 30_000
SUSPECT_MS_DEFAULT = 1_000


class Coordinator(DimensionAndMetric):
    """A ``VectorIndex`` over named shards of ``ReplicaLink`` replicas; see ``blocks.search.coordinator``.

    Searches may run from many threads at once; mutations must not run concurrently with each
    other (the ``VectorIndex`` contract; the service's write lock serialises them).
    """

    def __init__(
        self,
        shards: Sequence[tuple[str, Sequence[ReplicaLink]]],
        *,
        dim: int,
        metric: Metric | str,
        deadline_ms: int = DEADLINE_MS_DEFAULT,
        hedge: HedgeDelay | None = None,
        allow_partial: bool = False,
        write_timeout_ms: int = WRITE_TIMEOUT_MS_DEFAULT,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        suspect_ms: int = SUSPECT_MS_DEFAULT,
        nlist: int = 0,
        coarse: CoarseQuantizer | None = None,
        coarse_threads: int = COARSE_THREADS_DEFAULT,
        pipeline_rows: int = PIPELINE_ROWS_DEFAULT,
        pipeline_depth: int = PIPELINE_DEPTH_DEFAULT,
        data_path: DataPathClient | None = None,
    ) -> None:
        """``data_path``: the client the links' searches use, closed with the coordinator;
        ``nlist`` > 0: the shards are shared-IVF shards of that many lists, and ``coarse``
        their centroids once trained (``None`` before: ``train`` makes them);
        ``coarse_threads``: threads one search's coarse search splits its rows over
        (``CoarseQuantizer.assign``);
        ``pipeline_rows``, ``pipeline_depth``: a search's chunks and how many are in flight
        (``SearchPipeline``; depth 1 sends every batch whole)."""
        if not shards or any(not replicas for _, replicas in shards):
            raise InvalidArgument("every shard needs at least one replica")
        if deadline_ms <= 0 or write_timeout_ms <= 0:
            raise InvalidArgument("deadline_ms and write_timeout_ms must be positive")
        self.ring = ShardRing([name for name, _ in shards])
        self._replicas = [list(replicas) for _, replicas in shards]
        self._dim = int(dim)
        self._metric = Metric.parse(metric)
        self.deadline_ms = deadline_ms
        self.hedge = hedge if hedge is not None else HedgeDelay()
        self.allow_partial = allow_partial
        self._write_timeout_s = write_timeout_ms / 1000
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random(0)
        self.suspect_ms = suspect_ms
        # (shard, replica) -> until when (ms) it is asked last: it failed or lost a hedge
        self._suspect_until: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()  # guards _rng, hedge samples and the counters
        self.counters = {"searches": 0, "hedges": 0, "partial": 0, "failed_over": 0}
        if nlist < 0 or (coarse is not None and coarse.nlist != nlist):
            raise InvalidArgument(f"centroids for {nlist} lists expected")
        if coarse_threads < 1:
            raise InvalidArgument(f"coarse_threads must be positive, got {coarse_threads}")
        self.nlist = nlist
        self.coarse = coarse
        self.coarse_threads = coarse_threads
        self.pipeline = SearchPipeline(pipeline_rows, pipeline_depth)
        self._data_path = data_path

    @property
    def shard_names(self) -> list[str]:
        return self.ring.names

    def _now_ms(self) -> int:
        return int(self._clock.monotonic() * 1000)

    # -- reads -------------------------------------------------------------------------------

    def search(
        self,
        queries: Any,
        k: int,
        filter: Filter | None = None,
        *,
        timeout_ms: int | None = None,
        allow_partial: bool | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        where: Any = None,
    ) -> SearchResult:
        """Exact merge of every shard's top ``k``; ``timeout_ms`` caps ``deadline_ms``. A
        batch longer than the pipeline's chunk runs as chunks in flight together
        (``blocks.search.pipeline``), all under one deadline. ``where`` (an ``Expression`` or
        its JSON form) goes to every shard, which filters during its own search: each shard's
        top ``k`` among its matching ids, so the merge is the exact top ``k`` of them all."""
        k = check_k(k)
        data = as_vectors(queries, self._dim)
        template = search_pb2.SearchVectorsRequest(
            k=k, nprobe=nprobe or 0, ef_search=ef_search or 0, packed_reply=True
        )
        fill_search_filter(template, filter, as_expression(where))
        if self.nlist and nprobe is not None and nprobe < 1:
            raise InvalidArgument(f"nprobe must be positive, got {nprobe}")
        budget_ms = self.budget_ms(timeout_ms)
        deadline_ms = self._now_ms() + budget_ms
        partial_ok = self.allow_partial if allow_partial is None else allow_partial

        def search_rows(start: int, stop: int) -> SearchResult:
            request = search_pb2.SearchVectorsRequest()
            request.CopyFrom(template)
            return self._search_rows(
                request, data[start:stop], nprobe, budget_ms, deadline_ms, partial_ok
            )

        result = self.pipeline.run(data.shape[0], search_rows)
        if result.partial:
            with self._lock:
                self.counters["partial"] += 1
        return result

    def _search_rows(
        self,
        request: Any,
        data: FloatArray,
        nprobe: int | None,
        budget_ms: int,
        deadline_ms: int,
        partial_ok: bool,
    ) -> SearchResult:
        """One scatter of ``data``'s rows in ``request`` (its other fields set), merged."""
        fill_batch(request.queries, data)
        if self.nlist:
            self._fill_probe_lists(request, data, nprobe)
        left_ms = max(1, deadline_ms - self._now_ms())
        replies, missing, timed_out = self.scatter("SearchVectors", request, left_ms)
        parts = [decode_reply(replies[shard]) for shard in sorted(replies)]
        names = [self.ring.names[shard] for shard in missing]
        if missing and (not partial_ok or not parts):
            if timed_out:
                raise Timeout(f"shards {names} missed the {budget_ms} ms deadline")
            raise Unavailable(f"shards {names} have no replica that answered")
        # A rebalance copies an id to its new shard before deleting it from the old one.
        ids, distances = merge_topk(parts, int(request.k), self._metric, unique_ids=True)
        return SearchResult(
            ids=ids,
            distances=distances,
            partial=bool(missing),
            missing_shards=tuple(missing),
            missing_shard_names=tuple(names),
        )

    def _fill_probe_lists(self, request: Any, data: FloatArray, nprobe: int | None) -> None:
        """Shared IVF: the coarse search, once for every shard. The queries go out as given
        (each shard validates and normalises them as a single index would); the assignment
        uses the same normalised rows."""
        if self.coarse is None:
            raise FailedPrecondition("the shared IVF has no centroids yet: train it first")
        rows = (
            as_vectors(data, self._dim, metric=self._metric)
            if self._metric is Metric.COSINE
            else data
        )
        lists = self.coarse.assign(rows, nprobe or NPROBE_DEFAULT, self.coarse_threads)
        request.probe_lists = encode_probe_lists(lists)
        request.probes = lists.shape[1]
        request.nprobe = 0

    def _orders(self, now_ms: int) -> list[list[int]]:
        with self._lock:
            starts = [self._rng.randrange(len(replicas)) for replicas in self._replicas]
            suspects = {key for key, until in self._suspect_until.items() if until > now_ms}
        return [
            replica_order(len(replicas), start, {r for s, r in suspects if s == shard})
            for shard, (start, replicas) in enumerate(zip(starts, self._replicas, strict=True))
        ]

    def _suspect(self, shard: int, replica: int, now_ms: int) -> None:
        """``replica`` failed or lost a hedge: ask the others first for ``suspect_ms``."""
        with self._lock:
            self._suspect_until[shard, replica] = now_ms + self.suspect_ms

    def budget_ms(self, timeout_ms: int | None) -> int:
        """A call's deadline: ``deadline_ms``, or the caller's ``timeout_ms`` when shorter."""
        return max(1, self.deadline_ms if timeout_ms is None else min(timeout_ms, self.deadline_ms))

    def scatter(
        self, method: str, request: Any, budget_ms: int
    ) -> tuple[dict[int, Any], list[int], bool]:
        """``method`` on one replica per shard as one ``ScatterGather`` (hedges, fail-over,
        deadline): (replies by shard, missing shards, whether the deadline hit). Raises a
        replica's non-retryable error."""
        started = self._now_ms()
        deadline = started + budget_ms
        with self._lock:
            delay = self.hedge.delay_ms()
            self.counters["searches"] += 1
        core = ScatterGather(self._orders(started), deadline_ms=deadline, hedge_delay_ms=delay)
        events: queue.SimpleQueue[tuple[int, int, Any]] = queue.SimpleQueue()
        calls: dict[tuple[int, int], Any] = {}
        answers: dict[int, Any] = {}

        def carry_out(commands: Sequence[Send | Cancel], now_ms: int) -> None:
            for command in commands:
                key = (command.shard, command.replica)
                if isinstance(command, Cancel):
                    future = calls.pop(key, None)
                    if future is not None:
                        future.cancel()
                    continue
                link = self._replicas[command.shard][command.replica]
                future = link.start(method, request, (deadline - now_ms) / 1000)
                calls[key] = future
                future.add_done_callback(lambda done, key=key: events.put((key[0], key[1], done)))

        try:
            carry_out(core.start(started), started)
            while not core.done:
                now = self._now_ms()
                try:  # answers already in count before a hedge or the deadline is considered
                    shard, replica, future = events.get_nowait()
                except queue.Empty:
                    if now >= core.next_wakeup_ms():
                        sends, cancels = core.handle_tick(now)
                        carry_out([*cancels, *sends], now)
                        continue
                    try:
                        shard, replica, future = events.get(
                            timeout=(core.next_wakeup_ms() - now) / 1000
                        )
                    except queue.Empty:
                        continue
                calls.pop((shard, replica), None)
                now = self._now_ms()
                try:
                    reply = outcome(future)
                except BlocksError as error:
                    if not error.retryable:
                        raise
                    with self._lock:
                        self.counters["failed_over"] += 1
                    self._suspect(shard, replica, now)
                    carry_out(core.handle_failure(shard, replica, now), now)
                    continue
                cancels, latency_ms = core.handle_answer(shard, replica, now)
                if latency_ms >= 0:
                    answers[shard] = reply
                    with self._lock:
                        self.hedge.observe(latency_ms)
                for lost in cancels:
                    self._suspect(lost.shard, lost.replica, now)
                carry_out(cancels, now)
        finally:
            for future in calls.values():
                future.cancel()
            with self._lock:
                self.counters["hedges"] += core.hedges_sent
        return answers, core.missing(), core.timed_out

    # -- writes ------------------------------------------------------------------------------

    def to_all_replicas(self, calls: list[tuple[int, str, Any]]) -> list[tuple[int, int, Any]]:
        """Start every ``(shard, method, request)`` on each replica of the shard, wait for all;
        returns ``(shard, replica, reply or BlocksError)`` per call."""
        started = [
            (shard, replica, link.start(method, request, self._write_timeout_s))
            for shard, method, request in calls
            for replica, link in enumerate(self._replicas[shard])
        ]
        results: list[tuple[int, int, Any]] = []
        for shard, replica, future in started:
            try:
                results.append((shard, replica, outcome(future)))
            except BlocksError as error:
                results.append((shard, replica, error))
        return results

    def _by_shard(self, ids: IdArray) -> dict[int, Any]:
        owners = self.ring.owners_of_vectors(ids)
        return {int(shard): np.flatnonzero(owners == shard) for shard in np.unique(owners)}

    def add(self, ids: Any, vectors: Any, attributes: Sequence[Any] | None = None) -> None:
        """Write each shard's slice, with its ids' attributes when given (one mapping per
        id), to all its replicas; all or nothing (module docstring)."""
        data = as_vectors(vectors, self._dim)
        ids_np = as_ids(ids, expected=data.shape[0])
        checked = [attributes_to_wire(row) for row in check_attribute_rows(attributes, ids_np.size)]
        rows = self._by_shard(ids_np)
        calls = [
            (
                shard,
                "AddVectors",
                _add_request(
                    ids_np[where], data[where], [checked[at] for at in where] if checked else []
                ),
            )
            for shard, where in rows.items()
        ]
        results = self._given_centroids(self.to_all_replicas(calls), calls)
        errors = [result for _, _, result in results if isinstance(result, BlocksError)]
        if not errors:
            return
        undo = [
            (shard, replica, ids_np[rows[shard]])
            for shard, replica, result in results
            if not isinstance(result, BlocksError)
        ]
        for shard, replica, written in undo:
            request = search_pb2.RemoveVectorsRequest(ids=written.tolist())
            # A replica that fails the undo too went away: the write's outcome there is unknown.
            with contextlib.suppress(BlocksError):
                self._replicas[shard][replica].call("RemoveVectors", request, self._write_timeout_s)
        refused = [error for error in errors if not error.retryable]
        raise refused[0] if refused else errors[0]

    def _given_centroids(
        self, results: list[tuple[int, int, Any]], calls: list[tuple[int, str, Any]]
    ) -> list[tuple[int, int, Any]]:
        """Shared IVF: a replica that refused a write for want of centroids (a new or emptied
        replica the coordinator did not see at start) is given them and the write retried
        there once; other results pass through."""
        if self.coarse is None:
            return results
        requests = {shard: request for shard, _, request in calls}
        batch = encode_batch(self.coarse.centroids)
        out = []
        for shard, replica, result in results:
            if isinstance(result, FailedPrecondition):
                link = self._replicas[shard][replica]
                try:
                    link.call("SetCentroids", batch, self._write_timeout_s)
                    result = link.call("AddVectors", requests[shard], self._write_timeout_s)
                except BlocksError as error:
                    result = error
            out.append((shard, replica, result))
        return out

    def train(self, vectors: Any) -> None:
        """Train every replica of every shard on the same sample (IVF/PQ shards need it
        before their first add; a shard whose index needs no training ignores it).

        Shared IVF: the centroids are trained here, once, and every replica is given them
        (a no-op once trained, as for a faiss IVF)."""
        if self.nlist:
            if self.coarse is None:
                sample = as_vectors(vectors, self._dim, metric=self._metric)
                centroids = train_centroids(sample, self.nlist, self._metric)
                self.push_centroids(centroids)
                self.coarse = CoarseQuantizer(centroids, self._metric)
            return
        request = encode_batch(as_vectors(vectors, self._dim))
        calls = [(shard, "Train", request) for shard in range(len(self._replicas))]
        for _, _, result in self.to_all_replicas(calls):
            if isinstance(result, BlocksError):
                raise result

    def push_centroids(self, centroids: FloatArray) -> None:
        """``SetCentroids`` on every replica of every shard; the first failure is raised
        (running ``train`` again pushes to all again: the call is idempotent)."""
        request = encode_batch(centroids)
        calls = [(shard, "SetCentroids", request) for shard in range(len(self._replicas))]
        for _, _, result in self.to_all_replicas(calls):
            if isinstance(result, BlocksError):
                raise result

    def remove(self, ids: Any) -> int:
        """Remove from every replica of *every* shard; ``Unavailable`` if one failed.

        Not only the owner's: while a rebalance moves an id, the old shard may still hold it
        (``blocks.search.rebalance``), and a remove must not leave that copy to be moved back.
        The count adds up the shards, so an id held by two shards counts twice."""
        ids_np = as_ids(ids)
        if ids_np.size == 0:
            return 0
        request = search_pb2.RemoveVectorsRequest(ids=ids_np.tolist())
        calls = [(shard, "RemoveVectors", request) for shard in range(len(self._replicas))]
        removed: dict[int, int] = {}
        for shard, _, result in self.to_all_replicas(calls):
            if isinstance(result, BlocksError):
                raise result
            removed[shard] = max(removed.get(shard, 0), int(result.removed))
        return sum(removed.values())

    # -- the rest of VectorIndex -------------------------------------------------------------

    def __len__(self) -> int:
        """Vectors over all shards, counting one answering replica per shard."""
        total = 0
        for shard, replicas in enumerate(self._replicas):
            for link in replicas:
                try:
                    info = link.call("Info", search_pb2.InfoRequest(), self.deadline_ms / 1000)
                except BlocksError as error:
                    if not error.retryable:
                        raise
                    continue
                total += int(info.vectors)
                break
            else:
                raise Unavailable(f"shard {self.ring.names[shard]} has no replica that answered")
        return total

    def save(self, path: str = "") -> None:
        """Ask every replica to snapshot its own data directory (``path`` is ignored)."""
        calls = [(shard, "Save", search_pb2.SaveRequest()) for shard in range(len(self._replicas))]
        for _, _, result in self.to_all_replicas(calls):
            if isinstance(result, BlocksError):
                raise result

    def load(self, path: str) -> None:
        raise InvalidArgument("a coordinator keeps no data: each shard loads its own")

    def close(self) -> None:
        self.pipeline.close()
        if self.coarse is not None:
            self.coarse.close()
        for replicas in self._replicas:
            for link in replicas:
                link.close()
        if self._data_path is not None:
            self._data_path.close()


def _add_request(ids: IdArray, vectors: FloatArray, attributes: list[Any]) -> Any:
    request = search_pb2.AddVectorsRequest(ids=ids.tolist(), attributes=attributes)
    fill_batch(request.vectors, vectors)
    return request
