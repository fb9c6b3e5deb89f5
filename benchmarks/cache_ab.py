"""The cache's before/after comparison: this tree's W-TinyLFU beside another tree's, one run.

Theory of operation. ``blocks bench cache --before-src DIR`` (or ``python -m benchmarks.cache
--before-src DIR``) loads a second copy of ``blocks`` from ``DIR`` (a ``src`` folder of an
earlier tree) into the same process under the same module names, kept apart from this tree's
copy by swapping ``sys.modules`` around the import. Then, on the throughput streams of
``benchmarks.cache`` (read-through and mixed, 10,000 entries, 100 operations per batch):

* ``cachetools.LRUCache``, the earlier ``TinyLFUCache`` and this tree's run round by round,
  the starting one rotating, each from an empty cache warmed with a fifth of its operations;
* each rate is process CPU time (one thread; on a shared machine steadier than wall time);
* each row gives the median rate, the median (min-max) of the per-round ratios to cachetools
  and of after/before in the same round, the hit ratio of each W-TinyLFU (equal rounds give
  equal streams, so a change in a decision shows here), and the load average around the row.

Then the trace simulator (``hit_count`` of the adaptive W-TinyLFU on the cells of
``SPEED_CELLS``) the same way: requests/s of both trees and both hit counts.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from benchmarks.harness import progress, write_table

__all__ = ["before_after", "load_tree"]

_PACKAGE = "blocks"


def _tree_modules() -> dict[str, ModuleType]:
    return {
        name: module
        for name, module in sys.modules.items()
        if name == _PACKAGE or name.startswith(_PACKAGE + ".")
    }


@contextlib.contextmanager
def _swapped_tree(src: Path) -> Iterator[None]:
    """Import ``blocks`` from ``src`` inside the block; this tree's modules come back after."""
    ours = _tree_modules()
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        yield
    finally:
        sys.path.remove(str(src))
        for name in _tree_modules():
            del sys.modules[name]
        sys.modules.update(ours)
        importlib.invalidate_caches()


def load_tree(src: Path, *modules: str) -> list[ModuleType]:
    """``modules`` (dotted names under ``blocks``) imported from the tree at ``src``.

    The returned modules keep their own globals, so the earlier code runs as it was; an import
    done later inside one of its functions would find this tree's module instead.
    """
    if not (src / _PACKAGE / "__init__.py").is_file():
        raise SystemExit(f"--before-src {src}: no {_PACKAGE}/__init__.py there")
    with _swapped_tree(src):
        loaded = [importlib.import_module(f"{_PACKAGE}.{name}") for name in modules]
    assert all(str(src) in (module.__file__ or "") for module in loaded), "wrong tree"
    return loaded


def _spread(values: Sequence[float]) -> str:
    return f"x{statistics.median(values):.2f} (x{min(values):.2f}-x{max(values):.2f})"


def _time_cache(
    build: Callable[[], Any], op: Callable[[Any, int], None], ops: int
) -> tuple[float, float | None]:
    """(operations/s in CPU time, hit ratio or None) of one round on a fresh cache."""
    cache = build()
    gc.collect()  # the previous round's garbage is not this round's cost
    warm = ops // 5
    for index in range(warm):
        op(cache, index)
    started = time.process_time()
    for index in range(warm, warm + ops):
        op(cache, index)
    elapsed = max(time.process_time() - started, 1e-9)
    stats = getattr(cache, "stats", None)
    ratio = None
    if callable(stats):
        counts = stats()
        ratio = counts.hits / max(1, counts.hits + counts.misses)
    return ops * 100 / elapsed, ratio


def _throughput_rows(before: Any, quick: bool) -> list[list[str]]:
    from benchmarks import cache as bench
    from blocks.cache import TinyLFUCache

    ops, rounds = (500, 5) if quick else (3_000, 9)
    builders: dict[str, Callable[[], Any]] = {
        "cachetools": bench._cachetools_lru,
        "before": lambda: before.TinyLFUCache(bench.CAPACITY),
        "after": lambda: TinyLFUCache(bench.CAPACITY),
    }
    rows = []
    for stream_name, stream in bench.streams().items():
        for mixed in (False, True):
            body = functools.partial(bench._mixed if mixed else bench._read_through, stream=stream)
            load_before = os.getloadavg()[0]
            rates: dict[str, list[float]] = {name: [] for name in builders}
            hit_ratios: dict[str, set[float | None]] = {name: set() for name in builders}
            names = list(builders)
            for number in range(rounds):
                for name in names[number % 3 :] + names[: number % 3]:
                    rate, hit_ratio = _time_cache(builders[name], body, ops)
                    rates[name].append(rate)
                    hit_ratios[name].add(hit_ratio)
            load_after = os.getloadavg()[0]
            base = rates["cachetools"]
            rows.append(
                [
                    f"{stream_name}, {'mixed' if mixed else 'read-through'}",
                    f"{statistics.median(base) / 1e6:.2f}",
                    _spread([b / c for b, c in zip(rates["before"], base, strict=True)]),
                    _spread([a / c for a, c in zip(rates["after"], base, strict=True)]),
                    _spread([a / b for a, b in zip(rates["after"], rates["before"], strict=True)]),
                    " / ".join(
                        ",".join(
                            f"{100 * r:.2f}"
                            for r in sorted(r for r in hit_ratios[n] if r is not None)
                        )
                        for n in ("before", "after")
                    ),
                    f"{load_before:.1f}-{load_after:.1f}",
                ]
            )
            progress(f"[cache] before/after: {rows[-1][0]} done")
    return rows


def _speed_trace(name: str, requests: int, traces_dir: Path | None) -> list[Hashable] | None:
    from benchmarks import cache as bench
    from blocks.cache.traces import load_trace

    if name.startswith("zipf"):
        return list(bench._zipf_ranks(requests, 0.9, random.Random(1)))
    path = None if traces_dir is None else traces_dir / f"{name}.lirs.gz"
    if path is None or not path.is_file():
        return None
    return list(load_trace(path))[:requests]


def _simulator_rows(before: Any, traces_dir: Path | None, quick: bool) -> list[list[str]]:
    from benchmarks import cache as bench
    from blocks.cache import simulate

    requests, rounds = (50_000, 3) if quick else (bench.SPEED_REQUESTS, 5)
    runners: dict[str, Callable[[int, list[Hashable]], int]] = {
        "before": lambda size, trace: before.hit_count(before.make_policy("wtinylfu", size), trace),
        "after": lambda size, trace: simulate.hit_count(
            simulate.make_policy("wtinylfu", size), trace
        ),
    }
    rows = []
    for name, size in bench.SPEED_CELLS:
        trace = _speed_trace(name, requests, traces_dir)
        if trace is None:
            progress(f"[cache] before/after simulator: {name} skipped (no trace)")
            continue
        load_before = os.getloadavg()[0]
        rates: dict[str, list[float]] = {runner: [] for runner in runners}
        hits: dict[str, set[int]] = {runner: set() for runner in runners}
        order = list(runners)
        for number in range(rounds):
            for runner in order[number % 2 :] + order[: number % 2]:
                started = time.process_time()
                hits[runner].add(runners[runner](size, trace))
                rates[runner].append(len(trace) / max(time.process_time() - started, 1e-9))
        ratios = [a / b for a, b in zip(rates["after"], rates["before"], strict=True)]
        rows.append(
            [
                f"{name} / {size}",
                f"{statistics.median(rates['before']):,.0f}",
                f"{statistics.median(rates['after']):,.0f}",
                _spread(ratios),
                " / ".join(
                    ",".join(f"{100 * h / len(trace):.2f}" for h in sorted(hits[r]))
                    for r in runners
                ),
                f"{load_before:.1f}-{os.getloadavg()[0]:.1f}",
            ]
        )
        progress(f"[cache] before/after simulator: {name} / {size} done")
    return rows


def before_after(out: Path, before_src: Path, traces_dir: Path | None, quick: bool) -> str:
    """Both tables (see the module docstring) as Markdown, also written under ``out``."""
    before_cache, before_simulate = load_tree(before_src, "cache", "cache.simulate")

    before = SimpleNamespace(
        TinyLFUCache=before_cache.TinyLFUCache,
        hit_count=before_simulate.hit_count,
        make_policy=before_simulate.make_policy,
    )
    throughput = write_table(
        out,
        "before-after-throughput",
        [
            "stream, mix",
            "cachetools M ops/s (CPU)",
            "before vs cachetools",
            "after vs cachetools",
            "after / before",
            "hit % before / after",
            "load",
        ],
        _throughput_rows(before, quick),
    )
    simulator = write_table(
        out,
        "before-after-simulator",
        [
            "trace / size",
            "before requests/s (CPU)",
            "after requests/s (CPU)",
            "after / before",
            "hit % before / after",
            "load",
        ],
        _simulator_rows(before, traces_dir, quick),
    )
    return f"{throughput}\n{simulator}"
