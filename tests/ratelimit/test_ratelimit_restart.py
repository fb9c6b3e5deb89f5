"""Limits across a restart: overshoot (admitted above the limit) measured with an injected
clock, without state (a fresh limiter, what the server did before) and with the durable store
(crash without snapshot, clean stop with one, a wall clock stepped back); then server
processes killed with -9 and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from blocks.core.clock import ManualClock
from blocks.ratelimit.client import RateLimitClient
from blocks.ratelimit.distributed import MemoryWindowStore
from blocks.ratelimit.durable import ContinuedClock, RateLimitStore
from blocks.ratelimit.service import ALGORITHMS, make_limiter
from blocks.testing import ProcessCluster, ServerSpec, blocks_argv
from blocks.testing.process import NodeInfo, PeerAddresses
from blocks.testing.servers import grpc_health_check

RATE_PER_S = 10.0
LIMIT = 20
WINDOW_MS = 10_000  # the whole run lies in one window
STEP_S = 0.01
STEPS_PER_LIFE = 20
KEY = "tenant-1"


def _bound(algorithm: str, elapsed_s: float) -> int:
    """What the algorithm may admit over the run, for one key."""
    if algorithm in ("token-bucket", "gcra"):
        return int(LIMIT + RATE_PER_S * elapsed_s + 1e-9)
    return LIMIT


async def _life(
    algorithm: str, directory: Path, base: ManualClock, durable: bool, crash: bool
) -> int:
    """One server life: 20 requests 10 ms apart; the number admitted."""
    clock = ContinuedClock(base)
    limiter = make_limiter(
        algorithm, rate_per_s=RATE_PER_S, burst=LIMIT, window_ms=WINDOW_MS, clock=clock
    )
    store = RateLimitStore(str(directory), limiter, MemoryWindowStore(), clock, fsync="always")
    if durable:
        store.open()
    admitted = 0
    for _ in range(STEPS_PER_LIFE):
        with clock.held() as decided_at_s:
            decision = limiter.acquire(KEY, 1)
        if decision.allowed:
            admitted += 1
            if durable:
                await store.admitted(KEY, 1, decided_at_s)
        base.advance(STEP_S)
    if durable and crash:
        store.close(snapshot=False)  # kill -9: no snapshot
    elif durable:
        store.close()
    return admitted


def _overshoot(algorithm: str, directory: Path, *, durable: bool, crash: bool, step_ms: int) -> int:
    first = ManualClock(wall_ms=1_800_000_000_000, monotonic_s=5.0)
    admitted = asyncio.run(_life(algorithm, directory, first, durable, crash))
    # The next process: a new monotonic origin, the wall clock moved by the downtime + step.
    second = ManualClock(wall_ms=first.now_ms() + step_ms, monotonic_s=123.0)
    admitted += asyncio.run(_life(algorithm, directory, second, durable, crash))
    elapsed_s = 2 * STEPS_PER_LIFE * STEP_S + max(0, step_ms) / 1000
    return max(0, admitted - _bound(algorithm, elapsed_s))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_overshoot_across_a_restart_before_and_after(algorithm: str, tmp_path: Path) -> None:
    before = _overshoot(algorithm, tmp_path / "mem", durable=False, crash=True, step_ms=0)
    assert before >= LIMIT // 2  # a fresh limiter hands out a second allowance
    for crash in (True, False):
        for step_ms in (0, -60_000):  # no downtime; a wall clock stepped back a minute
            directory = tmp_path / f"d-{crash}-{step_ms}"
            after = _overshoot(algorithm, directory, durable=True, crash=crash, step_ms=step_ms)
            assert after == 0, (crash, step_ms)


def _ratelimit_spec() -> ServerSpec:
    def argv(node: NodeInfo, peers: PeerAddresses) -> list[str]:
        return blocks_argv(
            "ratelimit", "serve", "--algorithm", "fixed-window", "--burst", str(LIMIT),
            "--window-ms", "3600000", "--listen", node.address("listen"),
            "--data-dir", str(node.data_dir), "--token", node.token, "--json",
        )  # fmt: skip

    return ServerSpec(
        "ratelimit", ("listen",), argv, lambda node: grpc_health_check(node.address(), node.token)
    )


async def _admitted(cluster: ProcessCluster, attempts: int) -> int:
    async with RateLimitClient(cluster.address("r"), token=cluster.token) as client:
        return sum([(await client.acquire(KEY)).allowed for _ in range(attempts)])


@pytest.mark.process
def test_server_keeps_its_limits_across_kill_and_sigterm(tmp_path: Path) -> None:
    with ProcessCluster(_ratelimit_spec(), ["r"], tmp_path) as cluster:
        cluster.start("r")
        assert asyncio.run(_admitted(cluster, LIMIT - 5)) == LIMIT - 5
        cluster.restart("r")  # kill -9
        assert asyncio.run(_admitted(cluster, 10)) == 5
        cluster.terminate("r")
        cluster.start("r")
        assert asyncio.run(_admitted(cluster, 10)) == 0
