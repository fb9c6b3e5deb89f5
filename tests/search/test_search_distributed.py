"""Distributed search without processes: ring routing, the scatter-gather core, hedging, and
the ``Coordinator`` driver over stand-in replicas (futures answered by real exact indexes).

Stand-in replicas keep these tests independent of machine load: a *stuck* replica never
answers until cancelled, so hedging and deadlines are checked by what happened (which calls
were sent, cancelled, answered), never by how fast.
"""

from __future__ import annotations

import random
from concurrent.futures import Future
from typing import Any

import grpc
import numpy as np
import pytest

from blocks.core.errors import InvalidArgument, Timeout, Unavailable
from blocks.search import ExactIndex, search_pb2
from blocks.search.api import Metric
from blocks.search.coordinator import Coordinator, parse_named_shards
from blocks.search.routing import ShardRing, default_shard_names
from blocks.search.scatter import (
    LATENCY_SAMPLES_MIN,
    Cancel,
    HedgeDelay,
    ScatterGather,
    Send,
    replica_order,
)
from blocks.search.vectors import brute_force
from blocks.search.wire import decode_batch, encode_batch

# -- routing -----------------------------------------------------------------------------------


def test_adding_a_shard_moves_about_one_in_n_plus_one_ids_all_to_the_new_shard() -> None:
    ids = np.arange(20_000, dtype=np.int64)
    for count in (2, 4, 8):
        old = ShardRing(default_shard_names(count))
        new = old.with_shard(f"shard-{count}")
        moves = old.moves(new, ids.tolist())
        moved = sum(len(batch) for batch in moves.values())
        expected = len(ids) / (count + 1)
        assert 0.7 * expected <= moved <= 1.3 * expected, (count, moved, expected)
        assert {target for _, target in moves} == {f"shard-{count}"}
        owners = new.owners_of_vectors(ids)
        assert set(np.unique(owners).tolist()) == set(range(count + 1))


def test_routing_is_by_name_not_position_and_covers_documents() -> None:
    ring = ShardRing(["b", "a", "c"])
    other = ShardRing(["c", "a", "b"])
    ids = np.arange(500, dtype=np.int64)
    names = [ring.names[i] for i in ring.owners_of_vectors(ids)]
    assert names == [other.names[i] for i in other.owners_of_vectors(ids)]
    assert ring.names[ring.owner_of_vector(7)] == names[7]
    assert (
        ring.names[ring.owner_of_document("doc-1")] == other.names[other.owner_of_document("doc-1")]
    )
    for bad in ([], ["a", "a"], ["a=b"], [""], ["x" * 65]):
        with pytest.raises(InvalidArgument):
            ShardRing(bad)


def test_parse_named_shards() -> None:
    assert parse_named_shards("a=h:1+h:2, h:3") == [("a", ["h:1", "h:2"]), ("shard-1", ["h:3"])]
    for bad in ("a=h:1,a=h:2", "=h:1", "a=h", "h:1+"):
        with pytest.raises(InvalidArgument):
            parse_named_shards(bad)


# -- the pure core -----------------------------------------------------------------------------


def test_hedge_goes_to_the_next_replica_after_the_delay_and_the_first_answer_wins() -> None:
    core = ScatterGather([[1, 0], [0]], deadline_ms=1_000, hedge_delay_ms=30)
    assert core.start(0) == [Send(0, 1), Send(1, 0)]
    assert core.next_wakeup_ms() == 30
    assert core.handle_tick(29) == ([], [])
    assert core.handle_tick(30) == ([Send(0, 0, hedge=True)], [])
    assert core.handle_tick(40) == ([], [])  # one hedge per shard
    assert core.handle_answer(1, 0, 35) == ([], 35)
    cancels, latency = core.handle_answer(0, 0, 50)  # the hedge answers first
    assert cancels == [Cancel(0, 1)] and latency == 20  # its own latency, not the search's
    assert core.done and core.missing() == [] and core.hedges_sent == 1
    assert core.handle_answer(0, 1, 60) == ([], -1)  # the loser's late answer is ignored


def test_failure_fails_over_at_once_and_a_shard_out_of_replicas_is_missing() -> None:
    core = ScatterGather([[0, 1], [0]], deadline_ms=1_000, hedge_delay_ms=None)
    core.start(0)
    assert core.handle_failure(0, 0, 5) == [Send(0, 1)]
    assert core.handle_failure(1, 0, 5) == []
    assert not core.done
    assert core.handle_failure(0, 1, 6) == []
    assert core.done and core.missing() == [0, 1] and not core.timed_out


def test_deadline_cancels_what_is_out_and_names_the_missing_shards() -> None:
    core = ScatterGather([[0], [0, 1]], deadline_ms=100, hedge_delay_ms=10)
    core.start(0)
    core.handle_answer(0, 0, 5)
    assert core.handle_tick(10) == ([Send(1, 1, hedge=True)], [])
    assert core.next_wakeup_ms() == 100
    sends, cancels = core.handle_tick(100)
    assert sends == [] and sorted(cancels, key=lambda c: c.replica) == [Cancel(1, 0), Cancel(1, 1)]
    assert core.done and core.timed_out and core.missing() == [1] and core.answered() == [0]


def test_hedge_delay_fixed_or_from_observed_latency() -> None:
    assert HedgeDelay(7).delay_ms() == 7
    adaptive = HedgeDelay(initial_ms=50, floor_ms=2, ceiling_ms=500)
    for _ in range(LATENCY_SAMPLES_MIN - 1):
        adaptive.observe(10)
    assert adaptive.delay_ms() == 50  # too few samples yet
    for latency in range(1, 101):
        adaptive.observe(latency)
    assert 90 <= adaptive.delay_ms() <= 100  # about the 95th percentile
    for _ in range(300):
        adaptive.observe(10_000)
    assert adaptive.delay_ms() == 500  # capped; old samples have rolled out


# -- the driver over stand-in replicas -----------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "stand-in failure"

    def trailing_metadata(self) -> tuple[()]:
        return ()


class FakeReplica:
    """A ``ReplicaLink`` stand-in answering from an exact index; ``stuck`` never answers,
    ``down`` fails every call as unreachable."""

    def __init__(self, dim: int, metric: Metric, *, stuck: bool = False) -> None:
        self.index = ExactIndex(dim, metric)
        self.stuck = stuck
        self.down = False
        self.trained: Any = None
        self.calls: list[tuple[str, Future[Any]]] = []

    def start(self, method: str, request: Any, timeout_s: float) -> Future[Any]:
        future: Future[Any] = Future()
        self.calls.append((method, future))
        if self.down:
            future.set_exception(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
        elif not (self.stuck and method == "SearchVectors"):
            future.set_result(self._answer(method, request))
        return future

    def call(self, method: str, request: Any, timeout_s: float) -> Any:
        future = self.start(method, request, timeout_s)
        if self.down:
            raise Unavailable("stand-in down")
        return future.result()

    def _answer(self, method: str, request: Any) -> Any:
        if method == "AddVectors":
            self.index.add(np.array(request.ids), decode_batch(request.vectors, self.index.dim))
            return search_pb2.AddVectorsReply(size=len(self.index))
        if method == "RemoveVectors":
            return search_pb2.RemoveVectorsReply(removed=self.index.remove(np.array(request.ids)))
        if method == "Train":
            self.trained = decode_batch(request, self.index.dim)
            return search_pb2.TrainReply()
        if method == "Info":
            return search_pb2.InfoReply(dim=self.index.dim, vectors=len(self.index))
        assert method == "SearchVectors"
        result = self.index.search(decode_batch(request.queries, self.index.dim), request.k)
        return search_pb2.SearchVectorsReply(
            rows=result.ids.shape[0],
            k=result.ids.shape[1],
            ids=result.ids.ravel().tolist(),
            distances=result.distances.ravel().tolist(),
        )

    def close(self) -> None:
        pass


def make_coordinator(
    replicas: list[list[FakeReplica]], metric: Metric, **options: Any
) -> Coordinator:
    names = default_shard_names(len(replicas))
    shards: Any = list(zip(names, replicas, strict=True))
    return Coordinator(shards, dim=replicas[0][0].index.dim, metric=metric, **options)


@pytest.mark.parametrize("metric", list(Metric))
def test_coordinator_merge_equals_brute_force_for_every_metric(metric: Metric) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(600, 8)).astype(np.float32)
    queries = rng.normal(size=(12, 8)).astype(np.float32)
    replicas = [[FakeReplica(8, metric)] for _ in range(4)]
    coordinator = make_coordinator(replicas, metric)
    coordinator.add(np.arange(600), vectors)
    assert len(coordinator) == 600 and all(0 < len(r[0].index) < 600 for r in replicas)
    result = coordinator.search(queries, 9)
    want_ids, want_distances = brute_force(np.arange(600), vectors, queries, 9, metric)
    assert not result.partial
    assert result.ids.tolist() == want_ids.tolist()
    np.testing.assert_allclose(result.distances, want_distances, rtol=1e-4, atol=1e-4)


def test_a_shard_without_replicas_is_refused_or_flagged_partial_and_exact_over_the_rest() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(400, 6)).astype(np.float32)
    queries = rng.normal(size=(5, 6)).astype(np.float32)
    replicas = [[FakeReplica(6, Metric.L2), FakeReplica(6, Metric.L2)] for _ in range(3)]
    coordinator = make_coordinator(replicas, Metric.L2, rng=random.Random(1))
    coordinator.add(np.arange(400), vectors)
    replicas[1][0].down = True  # one replica down: its twin answers, the result is complete
    assert not coordinator.search(queries, 5).partial
    replicas[1][1].down = True
    with pytest.raises(Unavailable, match="shard-1"):
        coordinator.search(queries, 5)
    result = coordinator.search(queries, 5, allow_partial=True)
    assert result.partial and result.missing_shards == (1,)
    assert result.missing_shard_names == ("shard-1",)
    kept = coordinator.ring.owners_of_vectors(np.arange(400)) != 1
    want_ids, _ = brute_force(np.flatnonzero(kept), vectors[kept], queries, 5, Metric.L2)
    assert result.ids.tolist() == want_ids.tolist()


def test_a_stuck_shard_ends_at_the_deadline_never_later_than_asked() -> None:
    vectors = np.random.default_rng(5).normal(size=(100, 4)).astype(np.float32)
    replicas = [[FakeReplica(4, Metric.IP)], [FakeReplica(4, Metric.IP)]]
    coordinator = make_coordinator(replicas, Metric.IP, deadline_ms=60_000)
    coordinator.add(np.arange(100), vectors)
    replicas[0][0].stuck = True
    with pytest.raises(Timeout, match="shard-0"):
        coordinator.search(vectors[:2], 3, timeout_ms=100)  # the caller's shorter deadline
    result = coordinator.search(vectors[:2], 3, timeout_ms=100, allow_partial=True)
    assert result.partial and result.missing_shard_names == ("shard-0",)
    stuck_calls = [f for m, f in replicas[0][0].calls if m == "SearchVectors"]
    assert stuck_calls and all(f.cancelled() for f in stuck_calls)


def test_hedging_answers_from_the_second_replica_and_cancels_the_slow_one() -> None:
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(300, 5)).astype(np.float32)
    queries = rng.normal(size=(3, 5)).astype(np.float32)
    replicas = [[FakeReplica(5, Metric.L2), FakeReplica(5, Metric.L2)] for _ in range(2)]
    coordinator = make_coordinator(
        replicas, Metric.L2, hedge=HedgeDelay(5), deadline_ms=120_000, rng=random.Random(2)
    )
    coordinator.add(np.arange(300), vectors)
    replicas[0][1].stuck = True  # alive, accepts calls, never answers a search
    want_ids, _ = brute_force(np.arange(300), vectors, queries, 4, Metric.L2)
    for _ in range(20):
        result = coordinator.search(queries, 4)
        assert not result.partial and result.ids.tolist() == want_ids.tolist()
    slow_calls = [f for m, f in replicas[0][1].calls if m == "SearchVectors"]
    assert slow_calls, "the rotation never chose the slow replica first"
    assert all(f.cancelled() for f in slow_calls)  # every one lost to its hedge
    assert coordinator.counters["hedges"] >= len(slow_calls)


def test_a_replica_that_lost_a_hedge_is_asked_last_while_suspect() -> None:
    assert replica_order(3, 1, set()) == [1, 2, 0]
    assert replica_order(3, 1, {1}) == [2, 0, 1]
    vectors = np.random.default_rng(8).normal(size=(100, 4)).astype(np.float32)
    replicas = [[FakeReplica(4, Metric.L2), FakeReplica(4, Metric.L2, stuck=True)]]
    coordinator = make_coordinator(
        replicas, Metric.L2, hedge=HedgeDelay(1), suspect_ms=600_000, rng=random.Random(2)
    )
    coordinator.add(np.arange(100), vectors)
    for _ in range(20):
        assert not coordinator.search(vectors[:2], 3).partial
    stuck_calls = [f for m, f in replicas[0][1].calls if m == "SearchVectors"]
    assert len(stuck_calls) == 1  # chosen first once, lost its hedge, then asked last


def test_writes_go_to_every_replica_and_a_failed_write_is_undone() -> None:
    vectors = np.random.default_rng(7).normal(size=(200, 3)).astype(np.float32)
    replicas = [[FakeReplica(3, Metric.L2), FakeReplica(3, Metric.L2)] for _ in range(2)]
    coordinator = make_coordinator(replicas, Metric.L2)
    coordinator.add(np.arange(100), vectors[:100])
    for twins in replicas:
        assert twins[0].index.ids().tolist() == twins[1].index.ids().tolist()
    replicas[1][1].down = True
    with pytest.raises(Unavailable):
        coordinator.add(np.arange(100, 200), vectors[100:])
    assert sum(len(twins[0].index) for twins in replicas) == 100  # undone everywhere
    with pytest.raises(Unavailable):
        coordinator.train(vectors[:20])
    assert replicas[0][0].trained is not None and replicas[0][0].trained.shape == (20, 3)
    with pytest.raises(InvalidArgument):
        coordinator.add(np.arange(50, 60), vectors[:10])  # already present: refused
    replicas[1][1].down = False
    assert coordinator.remove(np.arange(10)) == 10
    assert len(coordinator) == 90


def test_the_wire_batch_round_trips() -> None:
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert decode_batch(encode_batch(data), 4).tolist() == data.tolist()
    with pytest.raises(InvalidArgument):
        decode_batch(encode_batch(data), 3)
