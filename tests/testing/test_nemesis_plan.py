"""The nemesis: plans replay from their seed, faults are applied and healed, the clock hook,
and the unique-values check on known-good and known-bad histories."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blocks.core.clock import CLOCK_OFFSET_ENV
from blocks.core.errors import InvalidArgument
from blocks.testing import (
    PROCESS_FAULTS,
    FaultKind,
    History,
    Nemesis,
    NodeState,
    OpType,
    ProcessCluster,
    check_unique_values,
    nemesis_seeds,
    nemesis_steps,
    plan,
)
from blocks.testing.nemesis import run_during, soak_line
from tests.testing.test_process_cluster import HTTP, fetch


def test_a_plan_is_a_function_of_its_seed() -> None:
    kinds = list(FaultKind)
    first = plan(11, ["a", "b", "c"], kinds, 50)
    assert first == plan(11, ["a", "b", "c"], kinds, 50)
    assert first != plan(12, ["a", "b", "c"], kinds, 50)
    assert {f.kind for f in first} == set(kinds)  # 50 draws reach all eight kinds
    assert all(0.2 <= f.hold_s <= 1.0 for f in first)
    jumps = [f for f in first if f.kind is FaultKind.CLOCK_JUMP]
    assert all(abs(f.amount) >= 1000 for f in jumps)
    assert "clock-jump" in " ".join(f.describe() for f in jumps)
    with pytest.raises(InvalidArgument):
        plan(1, [], kinds, 1)
    with pytest.raises(InvalidArgument):
        plan(1, ["a"], kinds, 1, hold_s=(2.0, 1.0))


def test_seeds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLOCKS_NEMESIS_SEED", raising=False)
    monkeypatch.delenv("BLOCKS_SOAK_SEEDS", raising=False)
    assert nemesis_seeds([1, 2]) == [1, 2]
    monkeypatch.setenv("BLOCKS_SOAK_SEEDS", "3")
    monkeypatch.setenv("BLOCKS_SOAK_FIRST_SEED", "40")
    assert nemesis_seeds([1, 2]) == [40, 41, 42]
    monkeypatch.setenv("BLOCKS_NEMESIS_SEED", "77")
    assert nemesis_seeds([1, 2]) == [77]


def test_network_faults_need_a_network(tmp_path: Path) -> None:
    with ProcessCluster(HTTP, ["a"], tmp_path) as cluster, pytest.raises(InvalidArgument):
        Nemesis(cluster, seed=1, kinds=[FaultKind.ISOLATE])


@pytest.mark.process
def test_process_faults_are_applied_and_healed(tmp_path: Path) -> None:
    kinds = [*PROCESS_FAULTS, FaultKind.WIPE, FaultKind.CLOCK_JUMP]
    with ProcessCluster(HTTP, ["a", "b"], tmp_path) as cluster:
        cluster.start_all()
        # No workload runs beside it: the calm between faults (0.5 s each) would only wait.
        nemesis = Nemesis(cluster, seed=3, kinds=kinds, steps=6, hold_s=(0.05, 0.1), calm_s=0.0)
        with cluster.failure_notes(nemesis.describe()):
            nemesis.run()
            assert nemesis.survived == nemesis.faults
            assert all(node.state is NodeState.RUNNING for node in cluster.nodes.values())
            for name in cluster.names:
                fetch(cluster.info(name))
                assert cluster.extra_env[name] == {}  # a clock jump is undone
            restarts = sum(node.incarnation - 1 for node in cluster.nodes.values())
            expected = sum(
                {FaultKind.PAUSE: 0, FaultKind.CLOCK_JUMP: 2}.get(f.kind, 1) for f in nemesis.faults
            )
            assert restarts == expected


def test_the_clock_offset_reaches_system_clock() -> None:
    code = "from blocks.core.clock import SystemClock; print(SystemClock().now_ms())"
    env = {**os.environ, CLOCK_OFFSET_ENV: "-3600000"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) < time.time_ns() // 1_000_000 - 3_000_000
    env[CLOCK_OFFSET_ENV] = "soon"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and CLOCK_OFFSET_ENV in bad.stderr


def test_unique_values_check() -> None:
    history = History()

    async def failing() -> None:
        raise TimeoutError

    async def returning(value: object) -> object:
        return value

    async def run() -> None:
        await history.call(0, "write", "k1", "v1", returning(None))
        await history.call(0, "write", "k2", "v2", returning(None))
        await history.call(1, "write", "k3", "v3", failing())  # unknown outcome
        await history.call(1, "read", "k1", None, returning(["v1"]), read=True)

    asyncio.run(run())
    assert history.counts() == {"invoke": 4, "ok": 3, "fail": 0, "info": 1}
    good = check_unique_values(history, ["v1", "v2"])
    assert good.valid and good.acknowledged == 2 and good.indeterminate == 1
    assert check_unique_values(history, ["v1", "v2", "v3"]).valid  # info may have happened
    lost = check_unique_values(history, ["v2"])
    assert not lost.valid and lost.lost == ("v1",) and "lost=1" in lost.describe()
    history.add(2, OpType.OK, "read", "k9", ["ghost"])
    invented = check_unique_values(history, ["v1", "v2"])
    assert invented.never_written == ("ghost",)


def test_steps_and_the_soak_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("BLOCKS_NEMESIS_STEPS", "BLOCKS_SOAK_SEEDS"):
        monkeypatch.delenv(name, raising=False)
    assert nemesis_steps() == 2
    monkeypatch.setenv("BLOCKS_SOAK_SEEDS", "300")
    assert nemesis_steps() == 6
    monkeypatch.setenv("BLOCKS_NEMESIS_STEPS", "9")
    assert nemesis_steps() == 9
    report = tmp_path / "soak.txt"
    monkeypatch.setenv("BLOCKS_SOAK_REPORT", str(report))
    with ProcessCluster(HTTP, ["a"], tmp_path / "cluster") as cluster:
        nemesis = Nemesis(cluster, seed=5, kinds=[FaultKind.PAUSE], steps=1)
        nemesis.survived.append(nemesis.faults[0])
        line = soak_line("http", nemesis, "lost=0")
    assert report.read_text() == line + "\n"
    assert line.startswith("http seed=5 survived [pause a") and line.endswith("lost=0")


@pytest.mark.process
def test_run_during_stops_the_workload_when_the_nemesis_is_done(tmp_path: Path) -> None:
    with ProcessCluster(HTTP, ["a"], tmp_path) as cluster:
        cluster.start_all()
        nemesis = Nemesis(cluster, seed=1, kinds=[FaultKind.PAUSE], steps=2, calm_s=0.05)
        answered: list[bool] = []

        async def workload(done: asyncio.Event) -> int:
            while not done.is_set():
                try:
                    await asyncio.to_thread(fetch, cluster.info("a"), "/", 0.2)
                    answered.append(True)
                except OSError:
                    answered.append(False)
            return len(answered)

        assert asyncio.run(run_during(nemesis, workload)) == len(answered)
        assert nemesis.survived == nemesis.faults
        assert True in answered
