"""Pipelining one large batch of queries through a coordinator (``Coordinator.search``).

Theory of operation. A coordinator's search runs in three stages, in two places: its own work
before the scatter (checking the queries, the shared IVF's coarse search, encoding the
request), the shards' scans, and its own work after the gather (decoding, ``merge_topk``).
Sent whole, a batch runs them one after another: while the coordinator assigns lists every
shard waits, and while the shards scan the coordinator sits idle. Cut into chunks of at most
``chunk_rows`` rows with up to ``depth`` chunks in flight, one chunk's coarse search and merge
overlap the other chunks' scans, so the cores the coordinator and the shards share stay busy.

Each chunk is an ordinary search of its rows: its own scatter, hedges and fail-over, under the
whole batch's deadline. The answers are stacked in row order, so the result is the one an
unchunked search gives (a query's top-k depends on that query alone). A chunk that fails fails
the batch, once every chunk in flight has finished (no call is left running for an answer
nobody reads); chunks answered partially make the batch partial, missing the union of their
missing shards.

Trade-offs. Each chunk costs every shard one more call (receive, decode, a scan's fixed cost,
encode): about 1 ms of a shard's CPU per call with gRPC in Python. Where the shards run on
their own machines that cost is theirs, and the overlap shortens every large batch; where
coordinator and shards share two cores (the benchmark's machine) the extra calls cost more CPU
than the overlap frees, so the pipeline is **off by default** (``depth`` 1: a batch goes whole)
and the coordinator instead splits its coarse search over threads (``CoarseQuantizer``).
docs/search.md has the measurements. Rejected: asking callers to keep several batches in
flight (the overlap would then depend on every client, and one large batch would still leave
cores idle); more OpenMP threads per shard (four shards spinning two threads each fight over
two cores).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import pairwise

import numpy as np

from blocks.core.errors import InvalidArgument
from blocks.search.api import SearchResult

__all__ = [
    "PIPELINE_DEPTH_DEFAULT",
    "PIPELINE_DEPTH_MAX",
    "PIPELINE_ROWS_DEFAULT",
    "SearchPipeline",
    "chunk_bounds",
    "stack_results",
]

PIPELINE_ROWS_DEFAULT = 256
PIPELINE_DEPTH_DEFAULT = 1
PIPELINE_DEPTH_MAX = 16


def chunk_bounds(rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges covering ``rows`` rows in order, each at most
    ``chunk_rows`` long and as equal as possible (1,000 rows by 256: four of 250)."""
    assert rows >= 0 and chunk_rows >= 1
    count = max(1, -(-rows // chunk_rows))
    edges = [rows * part // count for part in range(count + 1)]
    return list(pairwise(edges))


def stack_results(parts: Sequence[SearchResult]) -> SearchResult:
    """The chunks' answers as one, rows in order; partial if any chunk was, missing the
    union of their missing shards (by position, each with its name)."""
    assert parts
    names: dict[int, str] = {}
    for part in parts:
        names.update(zip(part.missing_shards, part.missing_shard_names, strict=False))
    missing = sorted({shard for part in parts for shard in part.missing_shards})
    return SearchResult(
        ids=np.concatenate([part.ids for part in parts]),
        distances=np.concatenate([part.distances for part in parts]),
        partial=any(part.partial for part in parts),
        missing_shards=tuple(missing),
        missing_shard_names=tuple(names[shard] for shard in missing if shard in names),
    )


class SearchPipeline:
    """Runs a batch's chunks on up to ``depth`` threads; see the module docstring.

    Safe to use from several threads at once: their chunks share the ``depth`` threads."""

    def __init__(
        self, chunk_rows: int = PIPELINE_ROWS_DEFAULT, depth: int = PIPELINE_DEPTH_DEFAULT
    ) -> None:
        if not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise InvalidArgument(f"pipeline chunk rows must be positive, got {chunk_rows!r}")
        if not isinstance(depth, int) or not 1 <= depth <= PIPELINE_DEPTH_MAX:
            raise InvalidArgument(
                f"pipeline depth must be in 1..{PIPELINE_DEPTH_MAX}, got {depth!r}"
            )
        self.chunk_rows = chunk_rows
        self.depth = depth
        self._pool = (
            ThreadPoolExecutor(depth, thread_name_prefix="search-pipeline") if depth > 1 else None
        )

    def run(self, rows: int, search_rows: Callable[[int, int], SearchResult]) -> SearchResult:
        """``search_rows(start, stop)`` for each chunk of ``rows`` rows, stacked in order
        (one call over every row when they fit in one chunk or ``depth`` is 1). Raises the first failing chunk's error (in row order) after all chunks finished."""
        bounds = chunk_bounds(rows, self.chunk_rows)
        if len(bounds) == 1 or self._pool is None:  # depth 1: no pipelining
            return search_rows(0, rows)
        futures: list[Future[SearchResult]] = [
            self._pool.submit(search_rows, start, stop) for start, stop in bounds
        ]
        wait(futures)
        return stack_results([future.result() for future in futures])

    def close(self) -> None:
        """Stops the threads once the chunks already taken have finished."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
