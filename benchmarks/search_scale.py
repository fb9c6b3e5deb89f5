"""Search scale model: the three terms of a scatter-gather query, measured.

A coordinator's vector search (``serve --remote-shards``) costs, per query::

    t(n, N) = t_shard(N / n) + t_merge(n) + t_rpc

with ``n`` shard machines and ``N`` vectors in all. This script measures each term alone:

1. ``t_rpc``: one ``SearchVectors`` call (1 query, k=10) to a shard *process* holding 16
   vectors, from a client in this process: the gRPC round trip plus encoding, almost no search.
2. ``t_shard(m)``: the same call to a second shard process holding ``m`` vectors (exact/flat,
   dim 64, L2), minus the tiny shard's call in the same round (the two alternate round by
   round); ``m`` in 25k, 50k, 100k (``--quick``: 25k and 50k). A line
   ``t_shard(m) = a + b * m`` is fitted through the points.
3. ``t_merge(n)``: ``merge_topk`` over ``n`` shards' top 10 (one query, ``unique_ids`` as the
   coordinator calls it), in process: pure CPU.

Calls are timed in five rounds after a warm-up: ``t_merge`` is the lowest round median (on a
loaded machine whole rounds are slowed by other processes), ``t_rpc`` and ``t_shard`` the
medians described above. The model's predictions for 1, 4 and 16 machines go to ``<out>/search_scale/results.json`` and the table on stdout; the load
average before and after is recorded with them, since a loaded machine inflates every term.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

DIM = 64
K = 10
SIZES = (25_000, 50_000, 100_000)
SIZES_QUICK = (25_000, 50_000)
MERGE_SHARDS = (1, 4, 16, 64)
PREDICT_MACHINES = (1, 4, 16)
START_TIMEOUT_S = 60.0
BATCH = 10_000
ROUNDS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer sizes and calls (< 1 min)")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per term")
    parser.add_argument("--seed", type=int, default=0)


def _median_s(call: Callable[[], Any], calls: int, warmup: int = 10) -> float:
    """The lowest of ``ROUNDS`` round medians: a loaded machine's bursts inflate some rounds."""
    for _ in range(warmup):
        call()
    medians = []
    for _ in range(ROUNDS):
        samples = []
        for _ in range(max(1, calls // ROUNDS)):
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
        medians.append(float(np.median(samples)))
    return min(medians)


def _start_shard() -> tuple[subprocess.Popen[str], str]:
    argv = [
        sys.executable, "-m", "blocks", "search", "serve", "--dim", str(DIM), "--metric", "l2",
        "--kind", "exact", "--device", "cpu", "--listen", "127.0.0.1:0", "--json",
    ]  # fmt: skip
    # One compute thread: the shard's search is timed alone, not against torch's own threads
    # fighting the machine's other load (a machine per shard would give it every core).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    shard = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert shard.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = shard.stdout.readline()
        if not line:
            break
        if line.lstrip().startswith("{"):
            return shard, str(json.loads(line)["address"])
    shard.kill()
    raise RuntimeError("the shard process did not announce its address")


def _stop(shard: subprocess.Popen[str]) -> None:
    shard.send_signal(signal.SIGTERM)
    try:
        shard.wait(timeout=20)
    except subprocess.TimeoutExpired:
        shard.kill()
        shard.wait()


def measure_merge(calls: int, rng: np.random.Generator) -> dict[int, float]:
    """``t_merge(n)`` in seconds: ``merge_topk`` of ``n`` sorted top-``K`` parts, one query."""
    from blocks.search.api import Metric
    from blocks.search.merge import merge_topk

    out = {}
    for n in MERGE_SHARDS:
        parts = [
            (
                rng.integers(0, 1 << 40, size=(1, K), dtype=np.int64),
                np.sort(rng.random((1, K), dtype=np.float32), axis=1),
            )
            for _ in range(n)
        ]
        out[n] = _median_s(partial(merge_topk, parts, K, Metric.L2, unique_ids=True), calls)
    return out


def _round_median_s(call: Callable[[], Any], calls: int) -> float:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return float(np.median(samples))


def measure_shard(
    calls: int, sizes: tuple[int, ...], rng: np.random.Generator
) -> tuple[float, dict[int, float]]:
    """``t_rpc`` and the client-seen latency at each shard size, in seconds.

    Two shard processes, a tiny one (16 vectors) and one grown through ``sizes``, are called
    round by round in turn, so both see the same load: ``t_rpc`` is the median of the tiny
    shard's round medians, and a size's latency is ``t_rpc`` plus the median of the rounds'
    differences (big minus tiny)."""
    from blocks.search.client import SearchClient

    tiny_shard, tiny_address = _start_shard()
    big_shard, big_address = None, ""
    try:
        big_shard, big_address = _start_shard()
        tiny, big = SearchClient(tiny_address), SearchClient(big_address)
        query = rng.standard_normal((1, DIM), dtype=np.float32)
        tiny.add(np.arange(16), rng.standard_normal((16, DIM), dtype=np.float32))
        held, latency, tiny_medians = 0, {}, []
        differences: dict[int, list[float]] = {}
        per_round = max(1, calls // ROUNDS)
        for size in sizes:
            while held < size:
                step = min(BATCH, size - held)
                big.add(
                    np.arange(held, held + step),
                    rng.standard_normal((step, DIM), dtype=np.float32),
                )
                held += step
            for _ in range(10):  # warm-up
                tiny.search(query, K)
                big.search(query, K)
            for _ in range(ROUNDS):
                t_tiny = _round_median_s(lambda: tiny.search(query, K), per_round)
                t_big = _round_median_s(lambda: big.search(query, K), per_round)
                tiny_medians.append(t_tiny)
                differences.setdefault(size, []).append(t_big - t_tiny)
        t_rpc = float(np.median(tiny_medians))
        latency = {size: t_rpc + float(np.median(d)) for size, d in differences.items()}
        tiny.close()
        big.close()
    finally:
        _stop(tiny_shard)
        if big_shard is not None:
            _stop(big_shard)
    return t_rpc, latency


def model(
    t_rpc: float, latency: dict[int, float], merge: dict[int, float], total: int
) -> dict[str, Any]:
    """Fit ``t_shard(m) = a + b m`` and predict per-query time and QPS per coordinator core."""
    sizes = np.array(sorted(latency), dtype=np.float64)
    shard_s = np.array([max(0.0, latency[int(m)] - t_rpc) for m in sizes])
    b, a = np.polyfit(sizes, shard_s, 1) if len(sizes) > 1 else (shard_s[0] / sizes[0], 0.0)
    a, b = max(0.0, float(a)), max(0.0, float(b))  # a negative term is noise, not a speed-up
    predictions = []
    for n in PREDICT_MACHINES:
        t_shard = a + float(b) * total / n
        t_merge = float(np.interp(n, list(merge), list(merge.values())))
        t = t_shard + t_merge + t_rpc
        predictions.append(
            {
                "machines": n,
                "t_shard_ms": t_shard * 1e3,
                "t_merge_ms": t_merge * 1e3,
                "t_rpc_ms": t_rpc * 1e3,
                "qps": 1.0 / t,
            }
        )
    return {"a_ms": a * 1e3, "b_ms_per_100k": float(b) * 1e8, "predictions": predictions}


def main(args: argparse.Namespace) -> int:
    quick = bool(getattr(args, "quick", False))
    calls = 60 if quick else int(getattr(args, "calls", 200))
    sizes = SIZES_QUICK if quick else SIZES
    rng = np.random.default_rng(int(getattr(args, "seed", 0)))
    load_before = os.getloadavg()
    merge = measure_merge(calls * 5, rng)
    t_rpc, latency = measure_shard(calls, sizes, rng)
    load_after = os.getloadavg()
    result: dict[str, Any] = {
        "dim": DIM,
        "k": K,
        "t_rpc_ms": t_rpc * 1e3,
        "shard_latency_ms": {str(m): s * 1e3 for m, s in latency.items()},
        "t_merge_ms": {str(n): s * 1e3 for n, s in merge.items()},
        "load_before": load_before,
        "load_after": load_after,
    }
    for total in (100_000, 1_000_000):
        result[f"model_{total}"] = model(t_rpc, latency, merge, total)
    out = Path(getattr(args, "out", "results")) / "search_scale"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"load before {load_before}, after {load_after} (numbers are indicative)")
    print(f"t_rpc (16-vector shard, 1 query, k={K}): {t_rpc * 1e3:.3f} ms")
    for m, s in latency.items():
        print(f"shard call at {m:,} x {DIM}: {s * 1e3:.3f} ms (t_shard {(s - t_rpc) * 1e3:.3f})")
    for n, s in merge.items():
        print(f"t_merge({n}): {s * 1e6:.1f} us")
    for total in (100_000, 1_000_000):
        fitted = result[f"model_{total}"]
        print(f"N = {total:,}: t_shard(m) = {fitted['a_ms']:.3f} ms + "
              f"{fitted['b_ms_per_100k']:.3f} ms per 100k")  # fmt: skip
        for row in fitted["predictions"]:
            print(f"  {row['machines']:>2} machines: {row['qps']:,.0f} QPS per coordinator core "
                  f"(shard {row['t_shard_ms']:.3f} + merge {row['t_merge_ms']:.3f} + "
                  f"rpc {row['t_rpc_ms']:.3f} ms)")  # fmt: skip
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results", help="results directory")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
