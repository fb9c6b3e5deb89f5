"""Several limiters sharing one store: exact mode never overshoots; batched mode is bounded."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from blocks.core.clock import ManualClock
from blocks.ratelimit.distributed import DistributedLimiter, MemoryWindowStore

LIMIT = 100
WINDOW_MS = 1000


def simulate(processes: int, sync_interval_ms: int, seconds: int = 5) -> tuple[Counter[int], int]:
    """Each process offers one request per ms; returns admitted per window and round trips."""
    clock = ManualClock(wall_ms=1_700_000_000_000)
    store = MemoryWindowStore()
    limiters = [
        DistributedLimiter(store, LIMIT, WINDOW_MS, sync_interval_ms=sync_interval_ms, clock=clock)
        for _ in range(processes)
    ]
    admitted: Counter[int] = Counter()
    for _ in range(seconds * 1000):
        for limiter in limiters:
            if limiter.acquire("api").allowed:
                admitted[clock.now_ms() // WINDOW_MS] += 1
        clock.advance(ms=1)
    return admitted, store.round_trips


def test_exact_mode_never_exceeds_the_limit_per_window() -> None:
    admitted, _ = simulate(processes=4, sync_interval_ms=0)
    assert max(admitted.values()) <= LIMIT
    assert min(admitted.values()) >= LIMIT // 2  # and it does admit traffic


@pytest.mark.parametrize("sync_interval_ms", [10, 100])
def test_batched_mode_overshoot_is_bounded_and_saves_round_trips(sync_interval_ms: int) -> None:
    _, exact_trips = simulate(processes=4, sync_interval_ms=0)
    admitted, trips = simulate(processes=4, sync_interval_ms=sync_interval_ms)
    assert trips < exact_trips / 5
    assert max(admitted.values()) <= 4 * LIMIT
    # A process's admissions reach the others within two sync intervals (its push, then
    # their read), so each of the 3 others overshoots by at most what it is offered in that
    # time (1 request per ms here), and never by more than the limit.
    assert max(admitted.values()) <= LIMIT + 3 * min(LIMIT, 2 * sync_interval_ms)


def test_flush_pushes_pending_cost() -> None:
    clock = ManualClock()
    store = MemoryWindowStore()
    first = DistributedLimiter(store, 10, 1000, sync_interval_ms=10_000, clock=clock)
    second = DistributedLimiter(store, 10, 1000, sync_interval_ms=10_000, clock=clock)
    for _ in range(7):
        assert first.acquire("k").allowed
    first.flush()
    decisions = [second.acquire("k").allowed for _ in range(5)]
    assert decisions == [True, True, True, False, False]


# Each admission is attributed to the clock reading the limiter decided on (a reading taken
# after acquire() returns can fall in the next window when the process is descheduled).
WORKER = """
import sys, time
from blocks.core.clock import SystemClock
from blocks.ratelimit.distributed import DistributedLimiter, FileWindowStore
class RecordingClock(SystemClock):
    last_ms = 0
    def now_ms(self):
        self.last_ms = super().now_ms()
        return self.last_ms
clock = RecordingClock()
store = FileWindowStore(sys.argv[1])
limiter = DistributedLimiter(store, limit=int(sys.argv[2]), window_ms=int(sys.argv[3]), clock=clock)
deadline = time.time() + float(sys.argv[4])
while time.time() < deadline:
    if limiter.acquire("shared").allowed:
        print(clock.last_ms, flush=False)
"""


@pytest.mark.process
def test_processes_sharing_a_file_store_respect_the_limit(tmp_path: Path) -> None:
    limit, window_ms = 50, 200
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(tmp_path / "store"),
                str(limit),
                str(window_ms),
                "1.0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    per_window: Counter[int] = Counter()
    for out in outputs:
        for line in out.split():
            per_window[int(line) // window_ms] += 1
    assert per_window, "nothing was admitted"
    assert max(per_window.values()) <= limit
    assert sum(1 for out in outputs if out.strip()) >= 2  # the limit really was shared
