"""Counters benchmark: HyperLogLog and Count-Min accuracy and updates/s vs ``datasketches``.

Peer: Apache DataSketches' Python package (``pip install datasketches``); without it its
contenders are reported as skipped and the accuracy tables show ours alone.

* ``hll-updates`` and ``count-min-updates``: single-item updates per second,
  ``HyperLogLog.add`` vs ``hll_sketch.update`` (both 2**12 registers), and
  ``CountMinSketch.add`` vs ``count_min_sketch.update`` (same width and depth), each sketch
  in its own run whose baseline is the peer's same sketch. The peer is C++ behind bindings;
  ours is Python over xxhash. The sketches are in-process objects without threads, so they
  are kept set up across the interleaved rounds (``Lifecycle.KEPT``).
* ``hll-batch-1000`` and ``count-min-batch-1000``: the same sketches fed 1,000 items per
  call: ``HyperLogLog.add_many`` / ``CountMinSketch.add_many`` (vectorised with numpy, see
  ``blocks.counters.bulk``) vs the peer's ``update`` mapped over the batch in C
  (``deque(map(sketch.update, batch), maxlen=0)``; DataSketches has no batch call for these
  sketches, and this is the fastest way to call it from Python). Rates count items.
* ``hll-accuracy``: mean and worst relative error over seeds at several cardinalities, next
  to the promised standard error 1.04/sqrt(m).
* ``cms-accuracy``: on a Zipf stream, the share of keys whose overestimate exceeds eps*N (the
  promise: at most delta) and the mean overestimate, ours and the peer's at the same shape.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections import Counter, deque
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
    Lifecycle,
    Skip,
    Workload,
    progress,
    run_benchmark,
    write_table,
)
from blocks.counters.countmin import CountMinSketch
from blocks.counters.hyperloglog import HyperLogLog

REQUIREMENTS = ["datasketches>=5.0"]
PRECISION = 12
CMS_WIDTH, CMS_DEPTH = 2048, 5
ITEMS = [f"user-{k}" for k in range(1 << 18)]
BATCH = 1000
HLL_BATCHES = [ITEMS[start : start + BATCH] for start in range(0, len(ITEMS) - BATCH, BATCH)]
CMS_BATCHES = [
    [ITEMS[index % 5000] for index in range(start, start + BATCH)]
    for start in range(0, 64 * BATCH, BATCH)
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer operations and seeds")
    add_overhead_arguments(parser)


def _datasketches() -> Any:
    try:
        import datasketches
    except ImportError:
        raise Skip("datasketches is not installed (pip install datasketches)") from None
    return datasketches


def _peer_hll() -> Any:
    return _datasketches().hll_sketch(PRECISION)


def _peer_cms() -> Any:
    return _datasketches().count_min_sketch(CMS_DEPTH, CMS_WIDTH)


def _item(index: int) -> str:
    return ITEMS[index & ((1 << 18) - 1)]


def _peer_batch(sketch: Any, batch: list[str]) -> None:
    deque(map(sketch.update, batch), maxlen=0)


def update_benchmarks() -> list[tuple[str, list[Contender], str]]:
    """(benchmark name, contenders, baseline): one run per sketch and call shape, against the
    same sketch."""
    hll = [
        Contender("hll (ours)", lambda: HyperLogLog(PRECISION), lambda s, i: s.add(_item(i))),
        Contender("hll (datasketches)", _peer_hll, lambda s, i: s.update(_item(i))),
    ]
    count_min = [
        Contender(
            "count-min (ours)",
            lambda: CountMinSketch(CMS_WIDTH, CMS_DEPTH),
            lambda s, i: s.add(_item(i % 5000)),
        ),
        Contender("count-min (datasketches)", _peer_cms, lambda s, i: s.update(_item(i % 5000))),
    ]
    hll_batch = [
        Contender(
            "hll add_many (ours)",
            lambda: HyperLogLog(PRECISION),
            lambda s, i: s.add_many(HLL_BATCHES[i % len(HLL_BATCHES)]),
            items_per_op=BATCH,
        ),
        Contender(
            "hll update loop (datasketches)",
            _peer_hll,
            lambda s, i: _peer_batch(s, HLL_BATCHES[i % len(HLL_BATCHES)]),
            items_per_op=BATCH,
        ),
    ]
    count_min_batch = [
        Contender(
            "count-min add_many (ours)",
            lambda: CountMinSketch(CMS_WIDTH, CMS_DEPTH),
            lambda s, i: s.add_many(CMS_BATCHES[i % len(CMS_BATCHES)]),
            items_per_op=BATCH,
        ),
        Contender(
            "count-min update loop (datasketches)",
            _peer_cms,
            lambda s, i: _peer_batch(s, CMS_BATCHES[i % len(CMS_BATCHES)]),
            items_per_op=BATCH,
        ),
    ]
    return [
        ("counters-hll-updates", hll, "hll (datasketches)"),
        ("counters-count-min-updates", count_min, "count-min (datasketches)"),
        ("counters-hll-batch-1000", hll_batch, "hll update loop (datasketches)"),
        ("counters-count-min-batch-1000", count_min_batch, "count-min update loop (datasketches)"),
    ]


def hll_accuracy(seeds: int) -> list[list[Any]]:
    rows = []
    sigma = 1.04 / math.sqrt(1 << PRECISION)
    for distinct in (1_000, 10_000, 100_000):
        ours, peer = [], []
        for seed in range(seeds):
            items = [f"s{seed}-{k}" for k in range(distinct)]
            sketch = HyperLogLog(PRECISION, seed=seed)
            sketch.add_many(items)
            ours.append(abs(sketch.count() - distinct) / distinct)
            try:
                other = _peer_hll()
            except Skip:
                continue
            for item in items:
                other.update(item)
            peer.append(abs(other.get_estimate() - distinct) / distinct)
        for name, errors in (("ours", ours), ("datasketches", peer)):
            if errors:
                rows.append(
                    [
                        distinct,
                        name,
                        f"{statistics.mean(errors):.2%}",
                        f"{max(errors):.2%}",
                        f"{sigma:.2%}",
                    ]
                )
    return rows


def cms_accuracy(seeds: int) -> list[list[Any]]:
    rows = []
    eps = math.e / CMS_WIDTH
    for seed in range(seeds):
        rng = random.Random(seed)
        weights = [1.0 / (rank + 1) for rank in range(20_000)]
        stream = [f"k{key}" for key in rng.choices(range(20_000), weights=weights, k=100_000)]
        truth = Counter(stream)
        ours = CountMinSketch(CMS_WIDTH, CMS_DEPTH, seed=seed)
        for key in stream:
            ours.add(key)
        estimators: list[tuple[str, Any]] = [("ours", ours.estimate)]
        try:
            peer = _peer_cms()
            for key, count in truth.items():
                peer.update(key, count)
            estimators.append(("datasketches", peer.get_estimate))
        except Skip:
            pass
        for name, estimate in estimators:
            over = [estimate(key) - count for key, count in truth.items()]
            beyond = sum(1 for value in over if value > eps * len(stream)) / len(over)
            rows.append(
                [
                    seed,
                    name,
                    f"{statistics.mean(over):.1f}",
                    f"{beyond:.3%}",
                    f"{math.exp(-CMS_DEPTH):.3%}",
                ]
            )
    return rows


def main(args: Any) -> int:
    if getattr(args, "adapter_overhead", False):
        return adapter_overhead(args)
    quick = getattr(args, "quick", False)
    for name, contenders, baseline in update_benchmarks():
        items_per_op = contenders[0].items_per_op
        workload = Workload(
            name.removeprefix("counters-"),
            ops=max(100, (20_000 if quick else 200_000) // items_per_op),
            warmup_ops=1000 // items_per_op,
            lifecycle=Lifecycle.KEPT,
        )
        run_benchmark(name, [workload], contenders, baseline=baseline, out_dir=args.out)
    progress("[counters] measuring accuracy")
    seeds = 3 if quick else 10
    hll_table = write_table(
        f"{args.out}/counters",
        "hll-accuracy",
        ["distinct", "sketch", "mean |error|", "worst |error|", "standard error"],
        hll_accuracy(seeds),
    )
    cms_table = write_table(
        f"{args.out}/counters",
        "cms-accuracy",
        ["seed", "sketch", "mean overestimate", "keys beyond eps*N", "promised at most"],
        cms_accuracy(2 if quick else 5),
    )
    print(f"\n## HyperLogLog accuracy (p={PRECISION})\n\n{hll_table}")
    print(f"\n## Count-Min accuracy ({CMS_WIDTH}x{CMS_DEPTH}, Zipf, N=100k)\n\n{cms_table}")
    return 0


# -- the Redis adapter (#20): RedisCounters beside redis-py on the same server ----------------

ADAPTER_COUNTERS = 100


def _adapter_counters(url: str) -> Any:
    from blocks.counters.adapters.redis import RedisCounters

    return RedisCounters.open(url, namespace="bench:")


def _adapter_increment(counters: Any, index: int) -> None:
    counters.increment(f"c{index % ADAPTER_COUNTERS}", 1)


def _raw_redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def adapter_overhead(args: Any) -> int:
    """One increment at a time over 100 counters: redis-py's ``INCRBY`` against
    ``RedisCounters.increment`` (one Lua script: the name bound, ``INCRBY``, the value)."""
    run_overhead(
        "counters-adapter-increment",
        overhead_workload("increment", args),
        [
            redis_contender(
                "redis-py", _raw_redis, lambda c, i: c.incrby(f"c{i % ADAPTER_COUNTERS}", 1)
            ),
            redis_contender(
                ADAPTER_ROW.format(engine="redis"), _adapter_counters, _adapter_increment
            ),
        ],
        "redis-py",
        getattr(args, "out", "results"),
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="results")
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
