"""The ``VectorIndex`` contract: a Hypothesis state machine against a brute-force model.

Theory of operation. ``vector_index_contract(factory, ...)`` returns a
``RuleBasedStateMachine`` class that drives a fresh index through random ``add``, ``remove``,
``search`` (with and without filters), bad input and ``save``/``load`` steps, and mirrors
every accepted change in a plain ``dict`` from id to vector. After each search the answer is
checked by ``check_search`` against ``brute_force`` over the model:

* ``exact=True`` (exact indexes): for L2 and inner product on the small-integer vectors the
  machine generates every distance is exact in float32, so ids must equal the brute-force
  ids, ties broken by smaller id. Cosine rounds, so there ranked distances must match within
  a tolerance and every returned id's true distance must match its reported one;
* ``exact=False`` (approximate indexes): every returned id is live, allowed by the filter,
  unique in its row, reported with its true distance, and rows are ordered best first.

Rejected calls (duplicate id, NaN, wrong dimension, ``k <= 0``) must raise
``InvalidArgument`` and leave the index equal to the model. Every rule, stated once:

* ``add`` of new ids stores them; ``add`` with an id already present (or repeated within the
  call) refuses the whole call; ``remove`` returns how many of the ids were present;
* ``search`` returns ``k`` columns per query, ``-1`` padding at the end of a row, best first;
* a filtered search returns only allowed, live ids;
* ``save`` then ``load`` into a fresh index keeps every vector (``len`` matches the model);
* ``len`` matches the model after every step.

Use it from a test module::

    TestMine = vector_index_contract(lambda dim, metric: MyIndex(dim, metric)).TestCase

The machine is a ``blocks.testing.contract.Contract``: its ``make_subject()`` calls the
factory with the machine's ``dim`` and drawn ``metric`` (subclass and override it instead of
passing a factory if you prefer), and ``close_subject`` closes the index when it can.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from blocks.core.errors import InvalidArgument
from blocks.search.api import Metric, SearchResult, VectorIndex
from blocks.search.vectors import brute_force
from blocks.testing.contract import Contract

__all__ = ["check_search", "vector_index_contract"]

IndexFactory = Callable[[int, Metric], VectorIndex]
SHARED_MEMORY_DIR = "/dev/shm"


def _scratch_dir() -> str | None:
    """Where ``save_and_load`` round-trips an index: memory when the system has a writable
    ``/dev/shm``, else the default temporary directory. The rule checks what comes back, not
    durability; on disk a sharded index's save (an fsync per file, every replica) made the
    sharded contract spend most of its time in fsync, unlink and rmdir (cProfile, load 9)."""
    if os.path.isdir(SHARED_MEMORY_DIR) and os.access(SHARED_MEMORY_DIR, os.W_OK | os.X_OK):
        return SHARED_MEMORY_DIR
    return None


def check_search(
    result: SearchResult,
    model: dict[int, np.ndarray[Any, Any]],
    queries: np.ndarray[Any, Any],
    k: int,
    metric: Metric,
    *,
    exact: bool,
    allowed: set[int] | None = None,
    tolerance: float = 1e-4,
) -> None:
    """Assert that ``result`` is a correct answer over ``model`` (see the module docstring)."""
    live = {i: v for i, v in model.items() if allowed is None or i in allowed}
    ids = np.array(sorted(live), dtype=np.int64)
    corpus = (
        np.stack([live[i] for i in ids.tolist()]).astype(np.float32)
        if len(ids)
        else np.empty((0, queries.shape[1]), dtype=np.float32)
    )
    want_ids, want_dist = brute_force(ids, corpus, queries, k, metric)
    assert result.ids.shape == (queries.shape[0], k), result.ids.shape
    got_dist = result.distances.astype(np.float64)
    scale = 1.0 + np.abs(want_dist[np.isfinite(want_dist)]).max(initial=0.0)
    if metric is not Metric.COSINE:
        # float32 L2 and inner products round relative to the vectors' squared norms, not to
        # the result: identical vectors of norm 20 may come back a few ulps of 400 apart.
        squared = [(np.asarray(m, dtype=np.float64) ** 2).sum(axis=1) for m in (queries, corpus)]
        scale = max(scale, 1.0 + max(float(norms.max(initial=0.0)) for norms in squared))
    if exact and metric is not Metric.COSINE:
        np.testing.assert_array_equal(result.ids, want_ids)
        np.testing.assert_allclose(got_dist, want_dist, rtol=0, atol=tolerance * scale)
        return
    true_by_id = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    _, all_dist = brute_force(ids, corpus, queries, max(1, len(ids)), metric)
    all_ids, _ = brute_force(ids, corpus, queries, max(1, len(ids)), metric)
    for row in range(queries.shape[0]):
        got = [i for i in result.ids[row].tolist() if i >= 0]
        assert len(set(got)) == len(got), f"row {row} repeats an id: {got}"
        assert all(i in true_by_id for i in got), f"row {row} returned a dead or filtered id"
        real = got_dist[row, : len(got)]
        assert (result.ids[row, len(got) :] == -1).all(), "padding must be at the end"
        steps = np.diff(real) if metric.higher_is_better else -np.diff(real)
        assert (steps <= tolerance * scale).all(), f"row {row} not ordered best first: {real}"
        truth = {i: d for i, d in zip(all_ids[row].tolist(), all_dist[row].tolist(), strict=True)}
        for item, distance in zip(got, real.tolist(), strict=True):
            assert abs(truth[item] - distance) <= tolerance * scale, (item, distance, truth[item])
        if exact:
            assert len(got) == min(k, len(ids)), (len(got), k, len(ids))
            np.testing.assert_allclose(real, want_dist[row, : len(got)], atol=tolerance * scale)


def vector_index_contract(
    factory: IndexFactory,
    *,
    exact: bool = True,
    dim: int = 4,
    metrics: tuple[Metric, ...] = (Metric.L2, Metric.IP, Metric.COSINE),
    id_max: int = 40,
) -> type[Contract[VectorIndex]]:
    """A state machine class checking indexes made by ``factory(dim, metric)``."""
    component = st.integers(min_value=-3, max_value=3)
    vector_strategy = st.lists(component, min_size=dim, max_size=dim).filter(
        lambda v: any(v)  # cosine refuses zero vectors
    )

    class VectorIndexMachine(Contract[VectorIndex]):
        ids = Bundle("ids")
        properties = ("exact or valid top-k", "filters", "refused input", "save and load")

        def make_subject(self) -> VectorIndex:
            return factory(dim, self.metric)

        @initialize(metric=st.sampled_from(metrics))
        def start(self, metric: Metric) -> None:
            self.metric = metric
            self.index = self.open_subject()
            self.model: dict[int, np.ndarray[Any, Any]] = {}

        def teardown(self) -> None:
            self.finish_subject(getattr(self, "index", None))

        @rule(
            target=ids,
            new=st.lists(
                st.tuples(st.integers(0, id_max), vector_strategy), min_size=1, max_size=6
            ),
        )
        def add(self, new: list[tuple[int, list[int]]]) -> Any:
            batch = {i: np.array(v, dtype=np.float32) for i, v in new}
            if any(i in self.model for i in batch):
                before = len(self.index)
                try:
                    self.index.add(list(batch), np.stack(list(batch.values())))
                except InvalidArgument:
                    assert len(self.index) == before
                    return next(iter(batch))
                raise AssertionError("adding a present id must raise InvalidArgument")
            self.index.add(np.array(list(batch), dtype=np.int64), np.stack(list(batch.values())))
            self.model.update(batch)
            return next(iter(batch))

        @rule(item=consumes(ids))
        def remove(self, item: int) -> None:
            removed = self.index.remove([item])
            assert removed == (1 if item in self.model else 0)
            self.model.pop(item, None)

        @rule(
            queries=st.lists(vector_strategy, min_size=1, max_size=3),
            k=st.integers(1, id_max + 5),
        )
        def search(self, queries: list[list[int]], k: int) -> None:
            q = np.array(queries, dtype=np.float32) + np.float32(0.25)
            result = self.index.search(q, k)
            check_search(result, self.model, q, k, self.metric, exact=exact)

        @precondition(lambda self: bool(self.model))
        @rule(data=st.data(), k=st.integers(1, 8))
        def search_filtered(self, data: st.DataObject, k: int) -> None:
            allowed = set(data.draw(st.sets(st.sampled_from(sorted(self.model)), max_size=5)))
            q = np.array([data.draw(vector_strategy)], dtype=np.float32)
            result = self.index.search(q, k, filter=sorted(allowed))
            check_search(result, self.model, q, k, self.metric, exact=exact, allowed=allowed)

        @rule(bad=st.sampled_from(["nan", "dim", "k", "dup"]))
        def bad_input(self, bad: str) -> None:
            before = len(self.index)
            good = np.ones((2, dim), dtype=np.float32)
            calls: dict[str, Callable[[], Any]] = {
                "nan": lambda: self.index.add([id_max + 1, id_max + 2], good * np.nan),
                "dim": lambda: self.index.add([id_max + 1], np.ones((1, dim + 1))),
                "k": lambda: self.index.search(good, 0),
                "dup": lambda: self.index.add([id_max + 1, id_max + 1], good),
            }
            try:
                calls[bad]()
            except InvalidArgument:
                pass
            else:
                raise AssertionError(f"bad input {bad!r} was accepted")
            assert len(self.index) == before

        @rule()
        def save_and_load(self) -> None:
            with tempfile.TemporaryDirectory(dir=_scratch_dir()) as directory:
                path = os.path.join(directory, "index")
                self.index.save(path)
                fresh = self.open_subject()
                fresh.load(path)
                assert len(fresh) == len(self.model)
                self.resolve(self.close_subject(self.index))
                self.index = fresh

        @invariant()
        def length_matches(self) -> None:
            if hasattr(self, "index"):
                assert len(self.index) == len(self.model)

    return VectorIndexMachine
