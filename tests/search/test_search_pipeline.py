"""A coordinator's batch sent as chunks in flight together (``blocks.search.pipeline``).

The shards are the real ``SearchService`` handlers of ``test_search_shared_ivf``'s stand-in
links: chunking must change how many calls each shard gets, never what the search answers.
"""

from __future__ import annotations

import asyncio
import threading
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument, PermissionDenied, Unavailable
from blocks.search.api import Metric, SearchResult
from blocks.search.coordinator_index import Coordinator
from blocks.search.pipeline import PIPELINE_DEPTH_MAX, SearchPipeline, chunk_bounds
from blocks.search.routing import default_shard_names
from tests.search.test_search_shared_ivf import NLIST, ROWS, ServiceLink, data, shard_node


@given(rows=st.integers(0, 5_000), chunk_rows=st.integers(1, 2_000))
def test_chunks_cover_every_row_once_in_order_and_evenly(rows: int, chunk_rows: int) -> None:
    bounds = chunk_bounds(rows, chunk_rows)
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(stop == start for (_, stop), (start, _) in pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) <= chunk_rows and max(sizes) - min(sizes) <= 1
    assert len(bounds) == max(1, -(-rows // chunk_rows))


def coordinator(links: list[ServiceLink], metric: Metric, *, rows: int, depth: int) -> Coordinator:
    names = default_shard_names(len(links))
    shards: Any = [(name, [link]) for name, link in zip(names, links, strict=True)]
    return Coordinator(
        shards,
        dim=links[0].node.vectors.dim,
        metric=metric,
        nlist=NLIST,
        pipeline_rows=rows,
        pipeline_depth=depth,
    )


@pytest.mark.parametrize("metric", list(Metric))
def test_a_chunked_search_answers_exactly_as_one_batch(
    metric: Metric, loop: asyncio.AbstractEventLoop
) -> None:
    vectors, queries = data()
    links = [ServiceLink(shard_node(metric), loop) for _ in range(3)]
    whole = coordinator(links, metric, rows=256, depth=1)
    whole.train(vectors[:2_000])
    whole.add(np.arange(ROWS), vectors)
    chunked = coordinator(links, metric, rows=7, depth=3)
    chunked.coarse = whole.coarse
    allowed = np.arange(0, ROWS, 3)
    for nprobe, allow in ((1, None), (4, None), (NLIST, None), (4, allowed)):
        want = whole.search(queries, 10, allow, nprobe=nprobe)
        before = [len(link.searches) for link in links]
        got = chunked.search(queries, 10, allow, nprobe=nprobe)
        assert got.ids.tolist() == want.ids.tolist()
        assert got.distances.tobytes() == want.distances.tobytes()
        assert not got.partial
        # 25 queries in chunks of at most 7: four calls to each shard, the rows split 7/6/6/6.
        sent = [link.searches[before[n] :] for n, link in enumerate(links)]
        assert all(sorted(r.queries.rows for r in calls) == [6, 6, 6, 7] for calls in sent)
    chunked.close()


def test_chunks_missing_a_shard_make_one_partial_answer_or_one_error(
    loop: asyncio.AbstractEventLoop,
) -> None:
    vectors, queries = data()
    links = [ServiceLink(shard_node(Metric.L2), loop) for _ in range(3)]
    chunked = coordinator(links, Metric.L2, rows=5, depth=2)
    chunked.train(vectors[:2_000])
    chunked.add(np.arange(ROWS), vectors)
    links[1].down = True
    with pytest.raises(Unavailable, match="shard-1"):
        chunked.search(queries, 10, nprobe=4)
    got = chunked.search(queries, 10, nprobe=4, allow_partial=True)
    assert got.partial and got.missing_shards == (1,) and got.missing_shard_names == ("shard-1",)
    assert chunked.counters["partial"] == 1  # one search, however many chunks
    assert got.ids.shape == (len(queries), 10) and set(got.ids.ravel()).isdisjoint(
        set(links[1].node.vectors.ids().tolist())  # type: ignore[attr-defined]
    )
    chunked.close()


def test_a_failing_chunk_fails_the_batch_after_every_chunk_has_finished() -> None:
    finished: list[int] = []
    lock = threading.Lock()
    release = threading.Event()

    def search_rows(start: int, stop: int) -> SearchResult:
        if start == 0:
            release.wait(5)  # the first chunk is still running when the second one fails
        with lock:
            finished.append(start)
        if start == 4:
            release.set()
            raise PermissionDenied("refused")
        rows = stop - start
        return SearchResult(ids=np.zeros((rows, 2), np.int64), distances=np.zeros((rows, 2)))

    pipeline = SearchPipeline(4, 3)
    with pytest.raises(PermissionDenied):
        pipeline.run(12, search_rows)
    assert sorted(finished) == [0, 4, 8]
    pipeline.close()


def test_depth_one_or_one_chunk_is_a_single_call_on_the_callers_thread() -> None:
    calls: list[tuple[int, int, str]] = []

    def search_rows(start: int, stop: int) -> SearchResult:
        calls.append((start, stop, threading.current_thread().name))
        rows = stop - start
        return SearchResult(ids=np.zeros((rows, 1), np.int64), distances=np.zeros((rows, 1)))

    me = threading.current_thread().name
    assert SearchPipeline(4, 1).run(10, search_rows).ids.shape == (10, 1)
    assert SearchPipeline(16, 3).run(10, search_rows).ids.shape == (10, 1)
    assert calls == [(0, 10, me), (0, 10, me)]
    for rows, depth in ((0, 2), (4, 0), (4, PIPELINE_DEPTH_MAX + 1)):
        with pytest.raises(InvalidArgument):
            SearchPipeline(rows, depth)
