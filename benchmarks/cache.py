"""Cache benchmark: hit ratios on public traces, and operations per second.

Peers: ``cachetools`` (``pip install cachetools``; its LRU and LFU caches appear in both
parts, reported as skipped when it is missing) and the standard library's
``functools.lru_cache``.

* ``hit ratio``: every trace in ``../shared/traces`` (LIRS format; traces with fewer than
  1,000 requests are listed and skipped), at four sizes per trace chosen from its number of
  distinct keys (and ``loop`` also at 1,000), for our LRU, LFU, ARC, adaptive W-TinyLFU and
  fixed-1%-window W-TinyLFU, cachetools' LRU and LFU, and Bélády's optimum. One table and one plot per trace, then a
  summary: for each policy the mean gap to optimal, and for the adaptive policy every cell
  where it is more than one point below the best of LRU and ARC.
* ``throughput``: 100 cache operations per timed op into a 10,000-entry cache, either
  ``read-through`` (get, and put on a miss; ``functools.lru_cache`` can join here) or
  ``mixed`` (80% read-through, 20% overwrites), on two key streams:

  - ``zipf-100k-keys``: 2**19 requests in which exactly 100,000 distinct keys appear: one
    request for every key (the long tail of one-time keys a real trace has) and the rest
    drawn from Zipf(1.0) over the same keys, shuffled together. Ten times the cache's
    capacity, so it fills and evicts (``tests/bench/test_bench_rows.py`` checks both).
  - ``zipf-0.9-evicting``: 2**19 draws from Zipf(0.9) over 100,000 keys, less skewed, so
    more of the operations are misses that insert and evict.

  Each round starts from an empty cache (the harness sets every contender up for its own
  rounds) and warms it with a fifth of the round's operations before timing.

* ``simulator speed`` (``--simulator-speed``, on its own): requests per second of the trace
  simulator (``blocks.cache.simulate.hit_count``) for LRU, the adaptive W-TinyLFU through the
  simulator's fast path (``blocks.cache.fastsim``) and the same policy through its own
  ``request`` one key at a time (the reference the fast path must equal), on the first
  200,000 requests of three real traces and of a Zipf(0.9) stream over 100,000 keys. Rounds
  interleave the three with the starting one rotating; each rate is process CPU time (the
  simulator is one thread, so on a shared machine this is steadier than wall time), and each
  ratio is to LRU in the same round, median with min and max. The hit counts of the fast
  path and the reference are checked equal in every round.

Run: ``blocks bench cache [--quick] [--traces DIR]``; results go to ``<out>/cache``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import random
import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._adapters import (
    ADAPTER_ROW,
    add_overhead_arguments,
    overhead_workload,
    redis_contender,
    run_overhead,
)
from benchmarks.harness import (
    Contender,
    Skip,
    Workload,
    plot_lines,
    progress,
    run_benchmark,
    write_table,
)
from blocks.cache import ARCCache, LFUCache, LRUCache, TinyLFUCache
from blocks.cache.optimal import optimal_hits
from blocks.cache.simulate import hit_count, make_policy
from blocks.cache.traces import load_trace

REQUIREMENTS = ["cachetools>=5.3", "matplotlib>=3.8"]

OURS = ["lru", "lfu", "arc", "wtinylfu", "wtinylfu-1%"]
PEERS = ["cachetools-lru", "cachetools-lfu"]
SIZE_FRACTIONS = (0.05, 0.1, 0.25, 0.5)
EXTRA_SIZES = {"loop": (1000,)}
"""Sizes measured besides the fractions: loop at 1,000 of its 1,011 keys is where the window
climber once ran to the whole cache (issue 21)."""
TRACE_REQUESTS_MIN = 1_000
KEYS, CAPACITY, BATCH = 100_000, 10_000, 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small traces only, fewer ops")
    parser.add_argument("--traces", default=None, help="folder of *.lirs.gz traces")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-hit-ratio", action="store_true")
    parser.add_argument(
        "--simulator-speed", action="store_true", help="only the simulator's requests/s"
    )
    parser.add_argument(
        "--before-src",
        default=None,
        help="only W-TinyLFU against the tree at this src folder, interleaved (cache_ab.py)",
    )
    add_overhead_arguments(parser)


def _cachetools() -> Any:
    try:
        import cachetools
    except ImportError:
        raise Skip("cachetools is not installed (pip install cachetools)") from None
    return cachetools


# --- hit ratios ------------------------------------------------------------------------


def _peer_hits(kind: str, trace: Sequence[Hashable], size: int) -> int | None:
    try:
        tools = _cachetools()
    except Skip:
        return None
    cache = tools.LRUCache(size) if kind == "cachetools-lru" else tools.LFUCache(size)
    hits = 0
    for key in trace:
        if key in cache:
            cache[key]  # a read: updates recency / frequency
            hits += 1
        else:
            cache[key] = True
    return hits


def _sizes(trace: Sequence[Hashable], name: str = "") -> list[int]:
    distinct = len(set(trace))
    fractions = {max(2, round(distinct * fraction)) for fraction in SIZE_FRACTIONS}
    return sorted(fractions | set(EXTRA_SIZES.get(name, ())))


def _traces_dir(option: str | None) -> Path | None:
    candidates = [Path(option)] if option else [Path("../shared/traces"), Path("shared/traces")]
    return next((path for path in candidates if path.is_dir()), None)


def _percent(ratio: float | None) -> str:
    return "skipped" if ratio is None else f"{100 * ratio:.2f}"


def hit_ratio_tables(out: Path, traces_dir: Path, quick: bool) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for path in sorted(traces_dir.glob("*.lirs*")):
        trace = load_trace(path)
        name = path.name.split(".")[0]
        if len(trace) < TRACE_REQUESTS_MIN or (quick and len(trace) > 50_000):
            progress(f"[cache] {name}: {len(trace)} requests, skipped")
            continue
        progress(f"[cache] {name}: {len(trace):,} requests")
        sizes = _sizes(trace, name)
        table: dict[str, dict[int, float | None]] = {}
        for policy in [*OURS, *PEERS, "optimal"]:
            table[policy] = {}
            for size in sizes:
                if policy == "optimal":
                    hits: int | None = optimal_hits(trace, size)
                elif policy in PEERS:
                    hits = _peer_hits(policy, trace, size)
                else:
                    hits = hit_count(make_policy(policy, size), trace)
                ratio = None if hits is None else hits / len(trace)
                table[policy][size] = ratio
                cells.append({"trace": name, "policy": policy, "size": size, "hit_ratio": ratio})
        rows = [[size, *(_percent(table[p][size]) for p in table)] for size in sizes]
        write_table(out, f"hit-ratio-{name}", ["size", *table], rows)
        series = {
            policy: [(size, 100 * value) for size, value in values.items() if value is not None]
            for policy, values in table.items()
        }
        plot_lines(
            out / f"hit-ratio-{name}.png",
            {policy: points for policy, points in series.items() if points},
            title=f"{name} ({len(trace):,} requests)",
            xlabel="cache size (entries)",
            ylabel="hit ratio (%)",
        )
    return cells


def summarize(out: Path, cells: list[dict[str, Any]]) -> str:
    by_cell = {(c["trace"], c["policy"], c["size"]): c["hit_ratio"] for c in cells}
    keys = sorted({(c["trace"], c["size"]) for c in cells})
    rows = []
    for policy in [*OURS, *PEERS]:
        gaps = [
            by_cell[(t, "optimal", s)] - by_cell[(t, policy, s)]
            for t, s in keys
            if by_cell.get((t, policy, s)) is not None
        ]
        if gaps:
            rows.append([policy, f"{100 * statistics.fmean(gaps):.2f}", f"{100 * max(gaps):.2f}"])
    summary = write_table(
        out, "hit-ratio-summary", ["policy", "mean gap to optimal (points)", "worst gap"], rows
    )
    misses = []
    for trace, size in keys:
        best = max(by_cell[(trace, "lru", size)], by_cell[(trace, "arc", size)])
        ours = by_cell[(trace, "wtinylfu", size)]
        if ours < best - 0.01:
            misses.append([trace, size, f"{100 * ours:.2f}", f"{100 * best:.2f}"])
    target = write_table(
        out, "hit-ratio-target-misses", ["trace", "size", "wtinylfu", "best of lru/arc"], misses
    )
    return (
        summary
        + "\nCells where wtinylfu is > 1 point below max(lru, arc):\n"
        + (target if misses else "none\n")
    )


# --- throughput ------------------------------------------------------------------------


STREAM_LENGTH = 1 << 19
MASK = STREAM_LENGTH - 1


def _zipf_ranks(count: int, skew: float, rng: random.Random) -> list[int]:
    weights = list(itertools.accumulate(1.0 / rank**skew for rank in range(1, KEYS + 1)))
    return rng.choices(range(KEYS), cum_weights=weights, k=count)


def _every_key_then_zipf(skew: float, rng: random.Random) -> list[int]:
    """Every one of the ``KEYS`` keys once, the rest of the stream Zipf(``skew``), shuffled."""
    stream = [*range(KEYS), *_zipf_ranks(STREAM_LENGTH - KEYS, skew, rng)]
    rng.shuffle(stream)
    return stream


@functools.cache
def streams() -> dict[str, list[int]]:
    """The key streams by workload name, built once on first use (about a second)."""
    return {
        "zipf-100k-keys": _every_key_then_zipf(1.0, random.Random(42)),
        "zipf-0.9-evicting": _zipf_ranks(STREAM_LENGTH, 0.9, random.Random(43)),
    }


def _read_through(cache: Any, index: int, stream: list[int]) -> None:
    get, put = cache.get, cache.put
    start = index * BATCH
    for offset in range(start, start + BATCH):
        key = stream[offset & MASK]
        if get(key) is None:
            put(key, key)


def _mixed(cache: Any, index: int, stream: list[int]) -> None:
    get, put = cache.get, cache.put
    start = index * BATCH
    for offset in range(start, start + BATCH):
        key = stream[offset & MASK]
        if offset % 5 == 0:
            put(key, offset)
        elif get(key) is None:
            put(key, key)


class _CachetoolsAdapter:
    """cachetools has ``get`` and item assignment; give it the same two calls."""

    __slots__ = ("get", "put")

    def __init__(self, cache: Any) -> None:
        self.get = cache.get
        self.put = cache.__setitem__


def _cachetools_lru() -> Any:
    return _CachetoolsAdapter(_cachetools().LRUCache(CAPACITY))


def _functools_setup() -> Any:
    return functools.lru_cache(maxsize=CAPACITY)(lambda key: key)


def _functools_read_through(cached: Callable[[int], int], index: int, stream: list[int]) -> None:
    start = index * BATCH
    for offset in range(start, start + BATCH):
        cached(stream[offset & MASK])


def _functools_mixed(cached: Any, index: int) -> None:
    raise Skip("functools.lru_cache cannot overwrite an entry")


def throughput_contenders(mixed: bool, stream: list[int]) -> list[Contender]:
    op = functools.partial(_mixed if mixed else _read_through, stream=stream)
    contenders = [
        Contender("blocks LRUCache", lambda: LRUCache(CAPACITY), op, items_per_op=BATCH),
        Contender("blocks TinyLFUCache", lambda: TinyLFUCache(CAPACITY), op, items_per_op=BATCH),
        Contender("blocks ARCCache", lambda: ARCCache(CAPACITY), op, items_per_op=BATCH),
        Contender("blocks LFUCache", lambda: LFUCache(CAPACITY), op, items_per_op=BATCH),
        Contender("cachetools.LRUCache", _cachetools_lru, op, items_per_op=BATCH),
    ]
    if not mixed:
        contenders.append(
            Contender(
                "functools.lru_cache",
                _functools_setup,
                functools.partial(_functools_read_through, stream=stream),
                items_per_op=BATCH,
            )
        )
    return contenders


SPEED_CELLS = (("loop", 1000), ("sprite", 354), ("multi2", 1421), ("zipf-0.9", 1000))
SPEED_REQUESTS = 200_000


def _request_loop(policy: Any, trace: Sequence[Hashable]) -> int:
    request = policy.request
    return sum(1 for key in trace if request(key))


def simulator_speed(out: Path, traces_dir: Path | None, quick: bool) -> str:
    """Requests/s of the simulator per policy, interleaved rounds (see the module docstring)."""
    requests = 50_000 if quick else SPEED_REQUESTS
    rounds = 3 if quick else 5
    runners: list[tuple[str, Callable[[int, Sequence[Hashable]], int]]] = [
        ("lru", lambda size, trace: hit_count(make_policy("lru", size), trace)),
        (
            "wtinylfu (fast path)",
            lambda size, trace: hit_count(make_policy("wtinylfu", size), trace),
        ),
        (
            "wtinylfu (request)",
            lambda size, trace: _request_loop(make_policy("wtinylfu", size), trace),
        ),
    ]
    rows = []
    for name, size in SPEED_CELLS:
        if name.startswith("zipf"):
            rng = random.Random(1)
            trace: list[Hashable] = list(_zipf_ranks(requests, 0.9, rng))
        else:
            path = None if traces_dir is None else traces_dir / f"{name}.lirs.gz"
            if path is None or not path.is_file():
                progress(f"[cache] simulator speed: {name} skipped (no trace)")
                continue
            trace = list(load_trace(path))[:requests]
        load_before = os.getloadavg()[0]
        rates: dict[str, list[float]] = {runner: [] for runner, _ in runners}
        for number in range(rounds):
            hits = {}
            for runner, run in runners[number % 3 :] + runners[: number % 3]:
                started = time.process_time()
                hits[runner] = run(size, trace)
                rates[runner].append(len(trace) / max(time.process_time() - started, 1e-9))
            assert hits["wtinylfu (fast path)"] == hits["wtinylfu (request)"], (name, hits)
        load_after = os.getloadavg()[0]
        for runner, _ in runners:
            ratios = [ours / lru for ours, lru in zip(rates[runner], rates["lru"], strict=True)]
            rows.append(
                [
                    f"{name} / {size}",
                    runner,
                    f"{statistics.median(rates[runner]):,.0f}",
                    f"x{statistics.median(ratios):.2f} (x{min(ratios):.2f}-x{max(ratios):.2f})",
                    f"{load_before:.1f}-{load_after:.1f}",
                ]
            )
        progress(f"[cache] simulator speed: {name} / {size} done")
    columns = ["trace / size", "policy", "requests/s (CPU)", "vs LRU, median (min-max)", "load"]
    return write_table(out, "simulator-speed", columns, rows)


def main(args: Any) -> int:
    if getattr(args, "adapter_overhead", False):
        return adapter_overhead(args)
    quick = getattr(args, "quick", False)
    out = Path(getattr(args, "out", "results")) / "cache"
    out.mkdir(parents=True, exist_ok=True)
    if getattr(args, "before_src", None):
        from benchmarks.cache_ab import before_after

        traces_dir = _traces_dir(getattr(args, "traces", None))
        tables = before_after(out, Path(args.before_src), traces_dir, quick)
        print(f"\n## W-TinyLFU before/after ({os.cpu_count()} CPUs)\n\n{tables}")
        return 0
    if getattr(args, "simulator_speed", False):
        table = simulator_speed(out, _traces_dir(getattr(args, "traces", None)), quick)
        print(f"\n## simulator speed ({os.cpu_count()} CPUs)\n\n{table}")
        return 0
    if not getattr(args, "skip_throughput", False):
        ops = 500 if quick else 5_000
        for (stream_name, stream), mixed in itertools.product(streams().items(), (False, True)):
            name = f"cache-{'mixed' if mixed else 'read-through'}-{stream_name}"
            workload = Workload(stream_name, ops=ops, rounds=5 if quick else 9, warmup_ops=ops // 5)
            try:
                run_benchmark(
                    name,
                    [workload],
                    throughput_contenders(mixed, stream),
                    baseline="cachetools.LRUCache",
                    out_dir=out,
                )
            except Skip as why:
                progress(f"[cache] {name} skipped: {why}")
    if not getattr(args, "skip_hit_ratio", False):
        traces_dir = _traces_dir(getattr(args, "traces", None))
        if traces_dir is None:
            progress("[cache] no traces folder found (../shared/traces): hit ratios skipped")
            return 0
        cells = hit_ratio_tables(out, traces_dir, quick)
        print("\n## cache hit ratios: summary\n\n" + summarize(out, cells))
    return 0


# -- the Redis adapter (#20): RedisCache beside redis-py on the same server --------------------

ADAPTER_KEYS = 1_000
ADAPTER_VALUE = b"v" * 100


def _raw_redis_cache(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url)
    client.mset({f"k{i}": ADAPTER_VALUE for i in range(ADAPTER_KEYS)})
    return client


def _adapter_cache(url: str) -> Any:
    from blocks.cache.adapters.redis import RedisCache

    cache = RedisCache.open(url, ADAPTER_KEYS * 10, namespace="bench:")
    for i in range(ADAPTER_KEYS):
        cache.put(f"k{i}", ADAPTER_VALUE)
    return cache


def adapter_overhead(args: Any) -> int:
    """``get`` and ``put`` of 100-byte values over 1,000 keys, one at a time: redis-py's
    ``GET``/``SET`` against ``RedisCache`` (msgpack-encoded keys and values)."""
    adapter = ADAPTER_ROW.format(engine="redis")
    shapes = (
        (
            "get",
            lambda c, i: c.get(f"k{i % ADAPTER_KEYS}"),
            lambda c, i: c.get(f"k{i % ADAPTER_KEYS}"),
        ),
        (
            "put",
            lambda c, i: c.set(f"k{i % ADAPTER_KEYS}", ADAPTER_VALUE),
            lambda c, i: c.put(f"k{i % ADAPTER_KEYS}", ADAPTER_VALUE),
        ),
    )
    for workload, raw_op, adapter_op in shapes:
        run_overhead(
            f"cache-adapter-{workload}",
            overhead_workload(workload, args),
            [
                redis_contender("redis-py", _raw_redis_cache, raw_op),
                redis_contender(adapter, _adapter_cache, adapter_op),
            ],
            "redis-py",
            getattr(args, "out", "results"),
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cache")
    parser.add_argument("--out", default="results")
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
