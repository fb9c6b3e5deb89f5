"""Adding a shard moves what it must: the export paging, the readable vector copy, the
deduplicating merge, and a fifth shard added to four real shard processes (copy, verify,
delete; searches exact before, between every step, and after; a crash midway finished by
running ``blocks search rebalance`` again)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blocks.core.errors import FailedPrecondition, InvalidArgument
from blocks.search import search_pb2
from blocks.search.api import Metric
from blocks.search.coordinator import connect_shards
from blocks.search.coordinator_node import CoordinatorNode
from blocks.search.export import export_documents, export_vectors
from blocks.search.merge import merge_topk
from blocks.search.node import SearchNode
from blocks.search.rebalance import Step, rebalance, transfers
from blocks.search.routing import ShardRing
from blocks.search.rows import VectorRows, select_page
from blocks.search.service import make_vector_index
from blocks.search.vectors import brute_force

# -- pure pieces -------------------------------------------------------------------------------


def test_select_page_is_bounded_ordered_and_resumes_after_its_cursor() -> None:
    keys = list(range(0, 100, 2))
    chosen, cursor, done = select_page(keys, None, lambda key: key % 3 == 0, limit=4)
    assert chosen == [0, 6, 12, 18] and cursor == 18 and not done
    chosen, cursor, done = select_page(keys, cursor, lambda key: key % 3 == 0, limit=100)
    assert chosen == [24, 30, 36, 42, 48, 54, 60, 66, 72, 78, 84, 90, 96] and done
    # scan_max bounds the work of a call that finds nothing
    chosen, cursor, done = select_page(keys, None, lambda key: False, limit=5, scan_max=10)
    assert chosen == [] and cursor == 18 and not done
    assert select_page([], None, lambda key: True, limit=3) == ([], None, True)
    names = sorted(["b", "a", "d", "c"])
    assert select_page(names, "b", lambda key: True, limit=1) == (["c"], "c", False)


def test_vector_rows_follow_adds_and_removes_and_survive_save_and_load(tmp_path: Path) -> None:
    rows = VectorRows()
    rng = np.random.default_rng(1)
    data = rng.normal(size=(200, 5)).astype(np.float32)
    rows.add(np.arange(200), data)
    rows.remove([3, 199, 50, 12345])
    ids, got = rows.get([199, 4, 3, 51])
    assert ids.tolist() == [4, 51] and np.array_equal(got, data[[4, 51]])
    rows.add(np.array([1000]), data[:1])
    assert len(rows) == 198
    rows.save(str(tmp_path))
    again = VectorRows()
    assert again.load(str(tmp_path)) and len(again) == 198
    assert again.sorted_ids().tolist() == rows.sorted_ids().tolist()
    ids, got = again.get(again.sorted_ids().tolist())
    assert np.array_equal(got, rows.get(ids.tolist())[1])
    assert not VectorRows().load(str(tmp_path / "none"))


def test_export_pages_select_what_the_new_ring_gives_the_target() -> None:
    rows = VectorRows()
    rows.add(np.arange(3000), np.ones((3000, 2), dtype=np.float32))
    ring = ShardRing(["a", "b", "c"])
    request = search_pb2.ExportRequest(ring_names=ring.names, owner="c", limit=100)
    seen: list[int] = []
    while True:
        reply = export_vectors(rows, request)
        assert len(reply.ids) <= 100
        seen += list(reply.ids)
        if reply.done:
            break
        request.has_after, request.after_id = True, reply.next_after_id
    owners = ring.owners_of_vectors(np.arange(3000))
    assert seen == np.flatnonzero(owners == 2).tolist()
    by_ids = export_vectors(rows, search_pb2.ExportRequest(by_ids=True, ids=[5, 99999, 7]))
    assert list(by_ids.ids) == [5, 7]
    with pytest.raises(InvalidArgument):
        export_vectors(rows, search_pb2.ExportRequest(ring_names=["a"], owner="z"))
    texts = {f"d{n}": f"text {n}" for n in range(50)}
    docs = export_documents(texts, search_pb2.ExportRequest(ring_names=ring.names, owner="a"))
    assert [d.id for d in docs.documents] == sorted(
        d for d in texts if ring.owner_of_document(d) == 0
    )


def test_a_node_restarted_from_a_snapshot_and_log_can_still_export(tmp_path: Path) -> None:
    def node() -> SearchNode:
        made = SearchNode(make_vector_index(4, "l2", kind="faiss", spec="HNSW32"), kind="faiss")
        made.data_dir = str(tmp_path)
        made.load()
        return made

    data = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    first = node()
    first.add_vectors(np.arange(20), data[:20])
    first.save()
    first.add_vectors(np.arange(20, 30), data[20:])  # in the log only
    first.remove_vectors(np.array([0, 25]))
    first.close()
    second = node()
    reply = second.export_vectors(search_pb2.ExportRequest(by_ids=True, ids=list(range(30))))
    assert list(reply.ids) == [i for i in range(30) if i not in (0, 25)]
    got = np.frombuffer(reply.vectors.values, dtype="<f4").reshape(-1, 4)
    assert np.array_equal(got, data[list(reply.ids)])
    second.close()


def test_an_index_saved_without_the_copy_refuses_to_export(tmp_path: Path) -> None:
    index = make_vector_index(3, "l2", kind="faiss", spec="Flat")
    index.add(np.arange(4), np.ones((4, 3), dtype=np.float32))
    index.save(str(tmp_path / "vectors.idx"))  # a data directory from before the copy existed
    node = SearchNode(make_vector_index(3, "l2", kind="faiss", spec="Flat"), kind="faiss")
    node.data_dir = str(tmp_path)
    node.load()
    with pytest.raises(FailedPrecondition):
        node.export_vectors(search_pb2.ExportRequest(by_ids=True, ids=[1]))
    node.close()


def test_the_merge_keeps_one_occurrence_of_an_id_held_by_two_shards() -> None:
    first = (np.array([[1, 2, 3]]), np.array([[0.1, 0.2, 0.3]], dtype=np.float32))
    second = (np.array([[2, 4, -1]]), np.array([[0.2, 0.25, 9.0]], dtype=np.float32))
    ids, distances = merge_topk([first, second], 4, Metric.L2, unique_ids=True)
    assert ids.tolist() == [[1, 2, 4, 3]]
    assert np.allclose(distances, [[0.1, 0.2, 0.25, 0.3]])
    ids, _ = merge_topk([first, second], 4, Metric.L2)  # without: the repeat takes a slot
    assert ids.tolist() == [[1, 2, 2, 4]]


def test_transfers_cover_every_old_shard_to_every_other_new_one() -> None:
    assert transfers(["a", "b"], ["a", "b", "c"]) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "a"),
        ("b", "c"),
    ]


# -- four shard processes and a fifth ---------------------------------------------------------

SERVE = [sys.executable, "-m", "blocks", "search", "serve", "--listen", "127.0.0.1:0", "--json"]
DIM, COUNT, K = 8, 1_500, 5
OLD = ["shard-0", "shard-1", "shard-2", "shard-3"]
NEW = [*OLD, "shard-4"]


def launch(data_dir: Path) -> subprocess.Popen[str]:
    argv = [*SERVE, "--dim", str(DIM), "--metric", "l2", "--kind", "faiss", "--spec", "Flat"]
    return subprocess.Popen(
        [*argv, "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def address_of(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(
            f"node did not start: {process.stderr.read() if process.stderr else ''}"
        )
    address: str = json.loads(line)["address"]
    return address


class Crash(Exception):
    """Stands for the rebalancing process dying between two steps."""


@pytest.mark.process
def test_a_fifth_shard_takes_a_fifth_of_the_ids_and_searches_stay_exact(tmp_path: Path) -> None:
    processes = [launch(tmp_path / f"node{n}") for n in range(6)]  # four old, two replicas new
    try:
        addresses = [address_of(process) for process in processes]
        old_spec = ",".join(
            f"{name}={address}" for name, address in zip(OLD, addresses, strict=False)
        )
        new_spec = f"{old_spec},shard-4={addresses[4]}+{addresses[5]}"
        rng = np.random.default_rng(19)
        ids = rng.choice(10**9, size=COUNT, replace=False).astype(np.int64)
        vectors = rng.normal(size=(COUNT, DIM)).astype(np.float32)
        queries = rng.normal(size=(6, DIM)).astype(np.float32)
        documents = [(f"doc-{n}", f"word{n % 7} common text {n}") for n in range(120)]
        want, _ = brute_force(ids, vectors, queries, K, Metric.L2)

        before = connect_shards(old_spec, timeout_ms=60_000, deadline_ms=60_000)
        before.add(ids, vectors)
        CoordinatorNode(before).index_documents(documents)
        assert before.search(queries, K).ids.tolist() == want.tolist()
        before.close()

        # The coordinator runs on the new list from here on; then the rebalance moves data.
        after = connect_shards(new_spec, timeout_ms=60_000, deadline_ms=60_000)
        node = CoordinatorNode(after)
        checks = {"n": 0}

        def exact(step: Step | None = None) -> None:
            assert after.search(queries, K).ids.tolist() == want.tolist(), step
            if step is None or step.kind == "documents":
                hits = node.search_text("common", 200, "bm25", record=False)
                assert sorted(hit[0] for hit in hits) == sorted(d for d, _ in documents), step
            checks["n"] += 1

        exact()
        crash_at = {"pages": 4}

        def crash_midway(step: Step) -> None:
            exact(step)
            if step.phase == "copied":  # copied but not yet deleted from the old shard
                crash_at["pages"] -= 1
                if crash_at["pages"] == 0:
                    raise Crash

        with pytest.raises(Crash):
            rebalance(old_spec, new_spec, page_rows=16, on_step=crash_midway)
        exact()

        finished = subprocess.run(
            [sys.executable, "-m", "blocks", "search", "rebalance", "--from-shards", old_spec,
             "--to-shards", new_spec, "--page-rows", "64", "--json"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert finished.returncode == 0, finished.stderr
        report = json.loads(finished.stdout)
        exact()
        assert checks["n"] >= 9  # before, 4 copies and 3 deletes, after the crash and the rerun

        # ~1/5 of the ids moved, all to shard-4, on both its replicas; nothing else moved.
        owners = ShardRing(NEW).owners_of_vectors(ids)
        expected = set(ids[owners == 4].tolist())
        assert 0.7 * COUNT / 5 <= len(expected) <= 1.3 * COUNT / 5
        assert set(report["vectors"]) <= {f"{name}->shard-4" for name in OLD}
        held = {name: _held_vectors(after, number) for number, name in enumerate(NEW)}
        for replica in held["shard-4"]:
            assert replica == expected
        for number, name in enumerate(OLD):
            assert held[name] == [set(ids[owners == number].tolist())]
        assert len(after) == COUNT
        assert node.document_count() == len(documents)
        rerun = rebalance(old_spec, new_spec, page_rows=64)  # idempotent: nothing left to move
        assert sum(rerun.vectors.values()) == 0 and sum(rerun.documents.values()) == 0
        exact()
        after.close()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def _held_vectors(coordinator: Any, shard: int) -> list[set[int]]:
    """The ids each replica of ``shard`` holds (an export of every id the ring gives anyone)."""
    held = []
    for link in coordinator._replicas[shard]:
        ids: set[int] = set()
        for owner in NEW:
            request = search_pb2.ExportRequest(ring_names=NEW, owner=owner, limit=4096)
            while True:
                reply = link.call("ExportVectors", request, 60)
                ids.update(reply.ids)
                if reply.done:
                    break
                request.has_after, request.after_id = True, reply.next_after_id
        held.append(ids)
    return held
