"""``ShardedIndex``: scatter a search over shards, gather, merge top-k; replicas per shard.

Theory of operation. The index holds ``num_shards`` *groups*; each group is one or more
replicas (any ``VectorIndex``: local, FAISS, or a remote client) holding the same vectors.
An id lives in group ``shard_of(id)`` (``blocks.search.merge``), so writes touch one group
and reads touch all of them.

* ``add`` validates the whole batch first, then writes each group's slice to every replica
  that is up. A replica that fails with a retryable error is marked *down* and stops serving
  reads (it may have missed writes; ``mark_up`` after a resync brings it back). If a group has
  no replica left, or a replica refuses the input, the slices already written are removed
  again and the error is raised: the index is unchanged.
* ``search`` submits one task per group to a bounded thread pool and waits until the
  deadline. A group task tries its replicas in turn, starting from a rotating offset so load
  spreads, and fails over on retryable errors. Groups that answered are merged with
  ``merge_topk`` (metric-aware, ties by id). Groups that missed the deadline or had no
  replica left make the answer *partial*: returned with ``partial=True`` and the missing
  shard numbers if ``allow_partial``, else ``Timeout`` / ``Unavailable`` is raised. A group
  that already has ``inflight_per_shard_max`` unfinished searches (a stuck shard) counts as
  missing at once instead of queueing more work behind it.

Mutations are not concurrent-safe with each other (as for any ``VectorIndex``); searches are.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from blocks.core.errors import BlocksError, InvalidArgument, Timeout, Unavailable
from blocks.search.api import (
    DimensionAndMetric,
    Filter,
    FloatArray,
    IdArray,
    SearchResult,
    VectorIndex,
)
from blocks.search.merge import merge_topk, shard_of
from blocks.search.vectors import as_ids, as_vectors, check_k

__all__ = ["ShardedIndex"]

SHARDS_MAX = 1024


class _Group:
    __slots__ = ("down", "inflight", "replicas")

    def __init__(self, replicas: Sequence[VectorIndex]) -> None:
        self.replicas = list(replicas)
        self.down: set[int] = set()
        self.inflight = 0

    def up(self) -> list[int]:
        return [i for i in range(len(self.replicas)) if i not in self.down]


class ShardedIndex(DimensionAndMetric):
    """A ``VectorIndex`` spread over shard groups; see the module docstring."""

    def __init__(
        self,
        shards: Sequence[VectorIndex | Sequence[VectorIndex]],
        *,
        timeout_ms: int | None = None,
        allow_partial: bool = False,
        inflight_per_shard_max: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= len(shards) <= SHARDS_MAX:
            raise InvalidArgument(f"need 1..{SHARDS_MAX} shards, got {len(shards)}")
        groups = [_Group([s] if isinstance(s, VectorIndex) else list(s)) for s in shards]
        if any(not g.replicas for g in groups):
            raise InvalidArgument("every shard needs at least one replica")
        first = groups[0].replicas[0]
        for group in groups:
            for replica in group.replicas:
                if replica.dim != first.dim or replica.metric != first.metric:
                    raise InvalidArgument("all shards must share one dim and metric")
        if timeout_ms is not None and timeout_ms <= 0:
            raise InvalidArgument("timeout_ms must be positive")
        if inflight_per_shard_max < 1:
            raise InvalidArgument("inflight_per_shard_max must be >= 1")
        self._groups = groups
        self._dim, self._metric = first.dim, first.metric
        self._timeout_ms = timeout_ms
        self._allow_partial = allow_partial
        self._inflight_max = inflight_per_shard_max
        self._rng = rng or random.Random(0)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=len(groups) * inflight_per_shard_max, thread_name_prefix="shard"
        )

    @classmethod
    def build(
        cls,
        factory: Callable[[], VectorIndex],
        num_shards: int,
        *,
        replicas: int = 1,
        **options: Any,
    ) -> ShardedIndex:
        """``num_shards`` groups of ``replicas`` indexes, each made by ``factory()``."""
        if replicas < 1:
            raise InvalidArgument("replicas must be >= 1")
        groups = [[factory() for _ in range(replicas)] for _ in range(num_shards)]
        return cls(groups, **options)

    @property
    def num_shards(self) -> int:
        return len(self._groups)

    def replicas(self, shard: int) -> list[VectorIndex]:
        return list(self._groups[shard].replicas)

    def down_replicas(self) -> list[tuple[int, int]]:
        """``(shard, replica)`` pairs currently excluded from reads and writes."""
        return [(s, r) for s, g in enumerate(self._groups) for r in sorted(g.down)]

    def mark_up(self, shard: int, replica: int) -> None:
        """Return a replica to service (after the caller resynced it)."""
        self._groups[shard].down.discard(replica)

    def __len__(self) -> int:
        total = 0
        for group in self._groups:
            live = group.up()
            total += len(group.replicas[live[0]]) if live else 0
        return total

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _write(self, name: str, routed: list[tuple[int, tuple[Any, ...]]]) -> list[int]:
        """Apply ``replica.<name>(*args)`` per group; returns per-group results from replica 0."""
        results: list[int] = []
        for shard, args in routed:
            group = self._groups[shard]
            answer: int | None = None
            for replica_no in group.up():
                try:
                    value = getattr(group.replicas[replica_no], name)(*args)
                except BlocksError as error:
                    if not error.retryable:
                        raise
                    group.down.add(replica_no)
                    continue
                answer = int(value or 0) if answer is None else answer
            if answer is None:
                raise Unavailable(f"shard {shard} has no replica up")
            results.append(answer)
        return results

    def add(self, ids: Any, vectors: Any) -> None:
        data = as_vectors(vectors, self._dim)  # cosine normalisation happens in each shard
        ids_np = as_ids(ids, expected=data.shape[0])
        owners = shard_of(ids_np, len(self._groups))
        done: list[IdArray] = []
        try:
            for shard in range(len(self._groups)):
                rows = np.flatnonzero(owners == shard)
                if rows.size == 0:
                    continue
                self._write("add", [(shard, (ids_np[rows], data[rows]))])
                done.append(ids_np[rows])
        except BaseException:
            for written in done:
                self._remove_routed(written)
            raise

    def remove(self, ids: Any) -> int:
        return self._remove_routed(as_ids(ids))

    def _remove_routed(self, ids_np: IdArray) -> int:
        owners = shard_of(ids_np, len(self._groups))
        routed = [
            (shard, (ids_np[owners == shard],))
            for shard in range(len(self._groups))
            if (owners == shard).any()
        ]
        return sum(self._write("remove", routed))

    def _search_group(
        self, shard: int, queries: FloatArray, k: int, filter: Any, options: dict[str, Any]
    ) -> tuple[IdArray, FloatArray]:
        group = self._groups[shard]
        try:
            candidates = group.up()
            if candidates:
                start = self._rng.randrange(len(candidates))
                candidates = candidates[start:] + candidates[:start]
            for replica_no in candidates:
                try:
                    result = group.replicas[replica_no].search(queries, k, filter, **options)
                except BlocksError as error:
                    if not error.retryable:
                        raise
                    continue
                return result.ids, result.distances
            raise Unavailable(f"shard {shard}: no replica answered")
        finally:
            with self._lock:
                group.inflight -= 1

    def search(
        self,
        queries: Any,
        k: int,
        filter: Filter | None = None,
        *,
        timeout_ms: int | None = None,
        allow_partial: bool | None = None,
        **options: Any,
    ) -> SearchResult:
        """Scatter-gather search; ``timeout_ms``/``allow_partial`` override the defaults.

        Extra keyword ``options`` (``nprobe``, ``ef_search``) go to every shard unchanged.
        """
        k = check_k(k)
        data = as_vectors(queries, self._dim)
        timeout = self._timeout_ms if timeout_ms is None else timeout_ms
        partial_ok = self._allow_partial if allow_partial is None else allow_partial
        futures: dict[Future[tuple[IdArray, FloatArray]], int] = {}
        missing: set[int] = set()
        for shard, group in enumerate(self._groups):
            with self._lock:
                if group.inflight >= self._inflight_max:
                    missing.add(shard)
                    continue
                group.inflight += 1
            future = self._pool.submit(self._search_group, shard, data, k, filter, options)
            futures[future] = shard
        done, _late = wait(futures, timeout=None if timeout is None else timeout / 1000)
        parts: list[tuple[IdArray, FloatArray]] = []
        timed_out = bool(_late) or bool(missing)
        for future, shard in futures.items():
            if future not in done:
                missing.add(shard)
                continue
            error = future.exception()
            if error is None:
                parts.append(future.result())
            elif isinstance(error, BlocksError) and not error.retryable:
                raise error
            else:
                missing.add(shard)
        if missing and (not partial_ok or not parts):
            names = sorted(missing)
            if timed_out:
                raise Timeout(f"shards {names} missed the {timeout} ms deadline")
            raise Unavailable(f"shards {names} have no replica that answered")
        ids, distances = merge_topk(parts, k, self._metric)
        return SearchResult(
            ids=ids,
            distances=distances,
            partial=bool(missing),
            missing_shards=tuple(sorted(missing)),
        )

    def save(self, path: str) -> None:
        """Write a directory: ``manifest.json`` and ``shard-<n>.idx`` per group."""
        os.makedirs(path, exist_ok=True)
        for shard, group in enumerate(self._groups):
            live = group.up()
            if not live:
                raise Unavailable(f"shard {shard} has no replica up to save")
            group.replicas[live[0]].save(os.path.join(path, f"shard-{shard}.idx"))
        manifest = {"num_shards": len(self._groups), "dim": self._dim, "metric": self._metric}
        with open(os.path.join(path, "manifest.json"), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle)

    def load(self, path: str) -> None:
        try:
            with open(os.path.join(path, "manifest.json"), encoding="utf-8") as handle:
                manifest = json.load(handle)
        except (OSError, ValueError) as error:
            raise InvalidArgument(f"cannot read sharded index at {path}: {error}") from None
        if manifest.get("num_shards") != len(self._groups):
            raise InvalidArgument(f"{path} has {manifest.get('num_shards')} shards")
        for shard, group in enumerate(self._groups):
            for replica in group.replicas:
                replica.load(os.path.join(path, f"shard-{shard}.idx"))
            group.down.clear()
