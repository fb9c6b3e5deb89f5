"""Adapter overhead rows: a block's API over an engine beside the engine's own client.

Theory of operation. For an adapter (``blocks.<block>.adapters``) the question is what the
block's API costs over the client a user would otherwise call directly, on the same server
and the same workload. Each block's benchmark names two (or more) contenders, the raw client
(the baseline) and ``blocks API over <engine>``, and ``run_overhead`` runs them in the
harness's interleaved rounds, every round on a fresh server of the same configuration, so the
ratio of each round is taken under the same load. The goal of issue #20 is an overhead of at
most 10 %: a throughput ratio (adapter / raw) of at least 1 / 1.1 = 0.91.

Many short rounds, servers kept: on a shared machine the load moves within seconds, so the
ratio of two rounds run back to back is the measurement, and the shorter and more numerous
the rounds, the more of them fall in the same weather. Each contender's server is therefore
started once and kept (``Lifecycle.KEPT``) rather than restarted around every round: an idle
``redis-server`` or ``nats-server`` does next to nothing while the other contender is
measured, and both are kept alike. The ratio is the median of the per-round ratios, with the
lowest and highest shown.

Redis runs with ``appendfsync everysec`` (an fsync per write would hide the client's cost
under the disk's); NATS with JetStream on file storage, as the blocks' other rows run it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from benchmarks.harness import (
    Contender,
    Lifecycle,
    Result,
    Skip,
    Workload,
    progress,
    run_benchmark,
)
from benchmarks.peers import start_redis_server

__all__ = [
    "ADAPTER_ROW",
    "OVERHEAD_GOAL",
    "add_overhead_arguments",
    "overhead_line",
    "overhead_workload",
    "redis_contender",
    "run_overhead",
]

OVERHEAD_GOAL = 0.10  # at most 10 % slower than the raw client
ADAPTER_ROW = "blocks API over {engine}"
OPS_DEFAULT = 500
ROUNDS_DEFAULT = 15


def add_overhead_arguments(parser: argparse.ArgumentParser) -> None:
    """``--adapter-overhead``: run only the adapter rows beside the raw client;
    ``--overhead-ops`` and ``--overhead-rounds`` size them."""
    parser.add_argument(
        "--adapter-overhead",
        action="store_true",
        help="only the adapter beside the engine's raw client (overhead with spread)",
    )
    parser.add_argument("--overhead-ops", type=int, default=OPS_DEFAULT, help="per round")
    parser.add_argument("--overhead-rounds", type=int, default=ROUNDS_DEFAULT)


def redis_contender(
    name: str,
    connect: Callable[[str], Any],
    op: Callable[[Any, int], Any],
    close: Callable[[Any], Any] = lambda client: client.close(),
) -> Contender:
    """A contender on a fresh ``redis-server`` (append-only, fsync every second) per round:
    ``connect(url)`` builds the client (raw redis-py or an adapter), ``op(client, i)`` is one
    operation; the probe is a ``PING`` through redis-py."""

    def setup() -> dict[str, Any]:
        try:
            import redis
        except ImportError:
            raise Skip("redis-py is not installed (pip install redis)") from None
        server = start_redis_server(appendfsync="everysec")
        url = f"redis://127.0.0.1:{server.port}"
        try:
            return {"server": server, "ping": redis.Redis.from_url(url), "client": connect(url)}
        except BaseException:
            server.stop()
            raise

    def ready(state: dict[str, Any]) -> None:
        state["ping"].ping()

    def teardown(state: dict[str, Any]) -> None:
        try:
            close(state["client"])
            state["ping"].close()
        finally:
            state["server"].stop()

    return Contender(name, setup, lambda state, i: op(state["client"], i), teardown, ready=ready)


def overhead_line(results: list[Result], baseline: str) -> list[str]:
    """One line per contender: its throughput ratio to ``baseline`` (median, min, max over
    the rounds) and the overhead that median means."""
    lines = []
    for result in results:
        if result.contender == baseline:
            continue
        if result.skipped is not None or result.ratio is None:
            lines.append(f"{result.workload}: {result.contender}: skipped ({result.skipped})")
            continue
        assert result.ratio_min is not None and result.ratio_max is not None
        overhead = 1 / result.ratio - 1 if result.ratio > 0 else float("inf")
        verdict = "within" if overhead <= OVERHEAD_GOAL else "over"
        lines.append(
            f"{result.workload}: {result.contender} / {baseline} = {result.ratio:.3f} "
            f"(rounds {result.ratio_min:.3f}..{result.ratio_max:.3f}): overhead "
            f"{overhead:+.1%}, {verdict} the {OVERHEAD_GOAL:.0%} goal"
        )
    return lines


def run_overhead(
    bench_name: str,
    workload: Workload,
    contenders: list[Contender],
    baseline: str,
    out_dir: str,
) -> list[Result]:
    """Run ``contenders`` (the raw client named ``baseline`` among them) and print the
    overhead lines."""
    results = run_benchmark(bench_name, [workload], contenders, baseline, out_dir)
    for line in overhead_line(results, baseline):
        progress(f"[{bench_name}] {line}")
    return results


def overhead_workload(
    name: str, args: argparse.Namespace, *, concurrency: int = 1, items_per_op: int = 1
) -> Workload:
    """The workload of an overhead run: ``--overhead-ops`` per round (default 500),
    ``--overhead-rounds`` (default 15); a batched operation of ``items_per_op`` items counts
    as that many (so a round moves about the same number of items whatever the shape).
    Each contender's server is kept across its rounds (see the module docs)."""
    ops = max(1, getattr(args, "overhead_ops", OPS_DEFAULT) // items_per_op)
    rounds = getattr(args, "overhead_rounds", ROUNDS_DEFAULT)
    return Workload(
        name,
        ops=ops,
        concurrency=concurrency,
        rounds=rounds,
        warmup_ops=ops // 5,
        lifecycle=Lifecycle.KEPT,
    )
