"""Rate-limit benchmark: decisions per second in-process and shared, and the accuracy trade-off.

Peer: the ``limits`` package (``pip install limits``), in memory, with its fixed-window,
moving-window and sliding-window-counter strategies; without it those contenders are skipped.

* ``in-process``: one ``acquire`` per op over 1,000 keys, each of our five algorithms against
  the peer's three.
* ``distributed``: one ``acquire`` per op over 4 hot keys, ``DistributedLimiter`` through a ``FileWindowStore`` (processes on one
  machine) and through a rate-limit server process (``RemoteWindowStore``, one gRPC call per
  store round trip), exact (``sync_interval_ms=0``) and batched (10 ms).
* ``overshoot.md``: a simulation with a manual clock of P processes each offered one request
  per millisecond against one shared limit of 1,000 per second: the worst window's admitted
  count relative to the limit, and store round trips per decision, per sync interval.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks._adapters import (
    ADAPTER_ROW,
    add_overhead_arguments,
    overhead_workload,
    redis_contender,
    run_overhead,
)
from benchmarks._processes import track_process
from benchmarks.harness import Contender, Skip, Workload, progress, run_benchmark, write_table
from blocks.core.clock import ManualClock
from blocks.ratelimit.bucket import GCRA, TokenBucket
from blocks.ratelimit.distributed import DistributedLimiter, FileWindowStore, MemoryWindowStore
from blocks.ratelimit.windows import FixedWindow, SlidingWindowCounter, SlidingWindowLog

REQUIREMENTS = ["limits>=3.0"]
KEYS = [f"user:{k}" for k in range(1000)]
RATE, LIMIT, WINDOW_MS = 100.0, 100, 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_overhead_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="fewer operations")


def _key(index: int) -> str:
    return KEYS[index % len(KEYS)]


def _hot_key(index: int) -> str:
    """Shared limits are per tenant or per API: few keys, each hot."""
    return KEYS[index % 4]


def _peer(strategy: str) -> Any:
    try:
        from limits import parse, storage, strategies
    except ImportError:
        raise Skip("limits is not installed (pip install limits)") from None
    limiter = getattr(strategies, strategy)(storage.MemoryStorage())
    return limiter, parse(f"{LIMIT}/second")


def in_process_contenders() -> list[Contender]:
    ours = [
        ("token-bucket", lambda: TokenBucket(RATE, LIMIT)),
        ("gcra", lambda: GCRA(RATE, LIMIT)),
        ("fixed-window", lambda: FixedWindow(LIMIT, WINDOW_MS)),
        ("sliding-log", lambda: SlidingWindowLog(LIMIT, WINDOW_MS)),
        ("sliding-counter", lambda: SlidingWindowCounter(LIMIT, WINDOW_MS)),
    ]
    peers = [
        ("limits fixed-window", "FixedWindowRateLimiter"),
        ("limits moving-window", "MovingWindowRateLimiter"),
        ("limits sliding-counter", "SlidingWindowCounterRateLimiter"),
    ]
    contenders = [Contender(name, make, lambda s, i: s.acquire(_key(i))) for name, make in ours]
    for name, strategy in peers:
        contenders.append(
            Contender(
                name,
                functools.partial(_peer, strategy),
                lambda s, i: s[0].hit(s[1], _key(i)),
            )
        )
    return contenders


def _start_server() -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "blocks", "ratelimit", "serve", "--listen", "127.0.0.1:0"]
    process = track_process(
        subprocess.Popen(
            [*argv, "--json"],
            stdout=subprocess.PIPE,
            text=True,
        )
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise Skip("could not start a rate-limit server")
    return process, json.loads(line)["address"]


def _remote(sync_interval_ms: int) -> Any:
    from blocks.ratelimit.client import RemoteWindowStore

    process, address = _start_server()
    store = RemoteWindowStore(address)
    return (
        process,
        store,
        DistributedLimiter(store, LIMIT, WINDOW_MS, sync_interval_ms=sync_interval_ms),
    )


def _stop_remote(state: Any) -> None:
    process, store, _ = state
    store.close()
    process.terminate()
    process.wait(timeout=20)


def distributed_contenders(directory: str) -> list[Contender]:
    def file_limiter(sync_interval_ms: int) -> DistributedLimiter:
        store = FileWindowStore(str(Path(directory) / f"store-{sync_interval_ms}"))
        return DistributedLimiter(store, LIMIT, WINDOW_MS, sync_interval_ms=sync_interval_ms)

    return [
        Contender(
            "memory exact",
            lambda: DistributedLimiter(MemoryWindowStore(), LIMIT, WINDOW_MS),
            lambda s, i: s.acquire(_hot_key(i)),
        ),
        Contender("file exact", lambda: file_limiter(0), lambda s, i: s.acquire(_hot_key(i))),
        Contender(
            "file batched 10ms", lambda: file_limiter(10), lambda s, i: s.acquire(_hot_key(i))
        ),
        Contender(
            "grpc exact", lambda: _remote(0), lambda s, i: s[2].acquire(_hot_key(i)), _stop_remote
        ),
        Contender(
            "grpc batched 10ms",
            lambda: _remote(10),
            lambda s, i: s[2].acquire(_hot_key(i)),
            _stop_remote,
        ),
    ]


def overshoot_rows(seconds: int) -> list[list[Any]]:
    rows = []
    limit = 1000
    for processes in (2, 4, 8):
        for sync_interval_ms in (0, 10, 50, 200):
            clock = ManualClock(wall_ms=1_700_000_000_000)
            store = MemoryWindowStore()
            limiters = [
                DistributedLimiter(
                    store, limit, 1000, sync_interval_ms=sync_interval_ms, clock=clock
                )
                for _ in range(processes)
            ]
            admitted: Counter[int] = Counter()
            decisions = 0
            for _ in range(seconds * 1000):
                for limiter in limiters:
                    decisions += 1
                    if limiter.acquire("api").allowed:
                        admitted[clock.now_ms() // 1000] += 1
                clock.advance(ms=1)
            steady = [admitted[w] for w in sorted(admitted)[1:]] or [0]
            rows.append(
                [
                    processes,
                    sync_interval_ms,
                    f"{max(admitted.values()) / limit:.2f}",
                    f"{max(steady) / limit:.2f}",
                    f"{store.round_trips / decisions:.3f}",
                ]
            )
    return rows


def main(args: Any) -> int:
    if getattr(args, "adapter_overhead", False):
        return adapter_overhead(args)
    quick = getattr(args, "quick", False)
    run_benchmark(
        "ratelimit",
        [Workload("in-process", ops=20_000 if quick else 200_000, warmup_ops=1000)],
        in_process_contenders(),
        baseline="limits fixed-window",
        out_dir=args.out,
    )
    with tempfile.TemporaryDirectory() as directory:
        run_benchmark(
            "ratelimit-distributed",
            [Workload("distributed", ops=1_000 if quick else 5_000, warmup_ops=100)],
            distributed_contenders(directory),
            baseline="memory exact",
            out_dir=args.out,
        )
    progress("[ratelimit] simulating overshoot")
    table = write_table(
        f"{args.out}/ratelimit",
        "overshoot",
        [
            "processes",
            "sync ms",
            "worst window / limit",
            "steady worst / limit",
            "round trips per decision",
        ],
        overshoot_rows(3 if quick else 6),
    )
    print(f"\n## Shared limit accuracy (limit 1000/s, each process offered 1000/s)\n\n{table}")
    return 0


# -- the Redis adapter (#20): RedisGCRA beside redis-py on the same server --------------------

ADAPTER_RATE_PER_S, ADAPTER_BURST = 1_000_000.0, 1_000  # never refuses: the admit path


def _adapter_gcra(url: str) -> Any:
    from blocks.ratelimit.adapters.redis import RedisGCRA

    return RedisGCRA.open(url, ADAPTER_RATE_PER_S, ADAPTER_BURST, namespace="bench:")


def _raw_gcra(url: str) -> Any:
    """redis-py running the adapter's own GCRA script by hand: the same work on the server,
    so the ratio is what the adapter adds on the client."""
    import redis

    from blocks.ratelimit.adapters import redis as adapter

    client = redis.Redis.from_url(url)
    interval_us = 1e6 / ADAPTER_RATE_PER_S
    parameters = ["", 0, repr(interval_us), repr(interval_us * ADAPTER_BURST), 1]
    script = client.register_script(adapter._GCRA)
    return client, script, parameters


def _raw_fixed_window(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def _fixed_window(client: Any, index: int) -> None:
    """What a user writes by hand: ``INCR`` and ``PEXPIRE NX`` in one round trip."""
    key = f"fw:{_key(index)}"
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.pexpire(key, WINDOW_MS, nx=True)
    pipe.execute()


def adapter_overhead(args: Any) -> int:
    """One ``acquire`` at a time over 1,000 keys: ``RedisGCRA`` against the same GCRA
    script called through redis-py (the baseline) and a hand-written fixed window."""
    raw = "redis-py GCRA script"
    run_overhead(
        "ratelimit-adapter-acquire",
        overhead_workload("acquire", args),
        [
            redis_contender(
                raw,
                _raw_gcra,
                lambda s, i: s[1](keys=[f"gcra:{_key(i)}"], args=s[2]),
                lambda s: s[0].close(),
            ),
            redis_contender("redis-py INCR+PEXPIRE window", _raw_fixed_window, _fixed_window),
            redis_contender(
                ADAPTER_ROW.format(engine="redis"), _adapter_gcra, lambda s, i: s.acquire(_key(i))
            ),
        ],
        raw,
        getattr(args, "out", "results"),
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="results")
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
