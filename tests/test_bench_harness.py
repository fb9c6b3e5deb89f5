"""The benchmark harness: lifecycle, interleaving, spread, load, failures as rows, readiness."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _processes, _sweep_core, inference
from benchmarks.harness import (
    Contender,
    Lifecycle,
    Skip,
    Workload,
    min_median_max,
    percentile,
    plot_lines,
    ratio_spread,
    round_order,
    run_benchmark,
    write_table,
)


def _missing_peer() -> Any:
    raise Skip("peer not installed")


async def _fast_op(state: dict[str, int], i: int) -> None:
    state["calls"] += 1


def _slow_op(state: dict[str, int], i: int) -> None:
    state["calls"] += 1
    time.sleep(0.0005)


def _load() -> tuple[float, float, float]:
    return (0.5, 0.25, 0.125)


class _Journal:
    """Contenders that write what happens to them into one shared list of events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def contender(self, name: str, **kwargs: Any) -> Contender:
        def setup() -> dict[str, int]:
            self.events.append((name, "setup"))
            return {"calls": 0}

        def op(state: dict[str, int], index: int) -> None:
            self.events.append((name, "op"))

        def teardown(state: dict[str, int]) -> None:
            self.events.append((name, "teardown"))

        return Contender(name, setup, op, teardown, **kwargs)


def _run(tmp_path: Path, contenders: list[Contender], **workload: Any) -> dict[str, Any]:
    settings = {"ops": 3, "rounds": 5, **workload}
    results = run_benchmark(
        "demo",
        [Workload("w", **settings)],
        contenders,
        baseline=contenders[0].name,
        out_dir=tmp_path,
        load_average=_load,
    )
    return {r.contender: r for r in results}


def test_runs_contenders_side_by_side_and_reports(tmp_path: Path) -> None:
    fast_state = {"calls": 0}
    torn_down: list[str] = []
    contenders = [
        Contender("slow", setup=lambda: {"calls": 0}, op=_slow_op),
        Contender(
            "fast",
            setup=lambda: fast_state,
            op=_fast_op,
            teardown=lambda state: torn_down.append("fast"),
            items_per_op=10,
        ),
        Contender("absent", setup=_missing_peer, op=_fast_op),
    ]
    results = run_benchmark(
        "demo",
        [Workload("ops", ops=50, warmup_ops=5)],
        contenders,
        baseline="slow",
        out_dir=tmp_path,
        load_average=_load,
    )
    by_name = {r.contender: r for r in results}
    assert fast_state["calls"] == 5 * (5 + 50)  # five rounds, each with its own warm-up
    assert torn_down == ["fast"] * 5  # started and stopped for each of its rounds
    assert by_name["slow"].ratio == pytest.approx(1.0)
    assert by_name["fast"].ratio is not None and by_name["fast"].ratio > 1.0
    assert by_name["absent"].skipped == "peer not installed" and by_name["absent"].ratio is None
    assert by_name["slow"].p50_ms >= 0.4  # it sleeps 0.5 ms per op
    assert len(by_name["fast"].round_throughputs) == 5

    directory = tmp_path / "demo"
    saved = json.loads((directory / "results.json").read_text())
    assert saved["baseline"] == "slow" and len(saved["results"]) == 3
    table = (directory / "results.md").read_text()
    assert "skipped: peer not installed" in table and "x1.00" in table
    assert (directory / "results.png").stat().st_size > 0


def test_synchronous_op_with_concurrency_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    journal = _Journal()
    with pytest.raises(ValueError, match="concurrency=1"):
        _run(tmp_path, [journal.contender("a"), journal.contender("b")], concurrency=4)
    assert journal.events == []


def test_round_order_rotates_the_first_contender() -> None:
    names = ["a", "b", "c"]
    assert [round_order(names, r) for r in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert round_order([], 3) == []


def test_each_contender_runs_alone_and_rounds_are_interleaved(tmp_path: Path) -> None:
    journal = _Journal()
    names = ["a", "b", "c"]
    _run(tmp_path, [journal.contender(n) for n in names], ops=2, warmup_ops=1)
    # Cut the journal into lives: from a setup to its teardown, nobody else does anything.
    lives: list[tuple[str, list[str]]] = []
    for name, event in journal.events:
        if event == "setup":
            lives.append((name, []))
        assert lives and lives[-1][0] == name, f"{name} acted while {lives[-1][0]} was up"
        lives[-1][1].append(event)
    assert all(events == ["setup", "op", "op", "op", "teardown"] for _, events in lives)
    expected = [n for r in range(5) for n in round_order(names, r)]
    assert [name for name, _ in lives] == expected
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["workloads"][0]["round_orders"] == [round_order(names, r) for r in range(5)]
    assert saved["workloads"][0]["lifecycle"] == "per-round"


def test_kept_lifecycle_sets_up_once_and_tears_down_after_the_last_round(
    tmp_path: Path,
) -> None:
    journal = _Journal()
    _run(tmp_path, [journal.contender("a"), journal.contender("b")], lifecycle=Lifecycle.KEPT)
    events = journal.events
    assert events.count(("a", "setup")) == 1 and events.count(("b", "setup")) == 1
    assert events[-2:] == [("a", "teardown"), ("b", "teardown")]
    assert events.count(("a", "op")) == 5 * 3
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["workloads"][0]["lifecycle"] == "kept"


def test_ratio_spread_compares_round_with_round() -> None:
    spread = ratio_spread([10.0, 30.0, 20.0, 50.0, 10.0], [10.0, 10.0, 10.0, 10.0, 0.0])
    assert spread is not None
    ratios, low, median, high = spread
    assert ratios == [1.0, 3.0, 2.0, 5.0]  # the round where the baseline measured 0 is left out
    assert (low, median, high) == (1.0, 2.5, 5.0)
    assert ratio_spread([1.0], [0.0]) is None


def test_min_median_max_takes_the_mean_of_the_two_middle_values() -> None:
    assert min_median_max([4.0, 1.0, 3.0, 2.0]) == (1.0, 2.5, 4.0)
    assert min_median_max([3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError):
        min_median_max([])


def test_percentile_is_the_nearest_rank_one_for_every_benchmark() -> None:
    """One percentile for the harness, ``inference`` and ``inference_sweep``: the smallest
    value with at least that fraction of them at or below it. The p99 of 1..100 is 99, not
    the maximum; the p50 of 1..4 is 2 (``int(fraction * n)`` as an index took 100 and 3)."""
    values = [float(v) for v in range(100, 0, -1)]  # any order
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0
    assert percentile([7.0], 0.0) == percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))
    assert inference.percentile is percentile and _sweep_core.percentile is percentile


def test_rows_carry_the_median_ratio_and_its_spread(tmp_path: Path) -> None:
    journal = _Journal()
    by_name = _run(tmp_path, [journal.contender("a"), journal.contender("b")])
    for name in ("a", "b"):
        row = by_name[name]
        spread = ratio_spread(row.round_throughputs, by_name["a"].round_throughputs)
        assert spread is not None and len(row.round_ratios) == 5
        assert (row.round_ratios, row.ratio_min, row.ratio, row.ratio_max) == spread
    assert by_name["a"].ratio_min == by_name["a"].ratio_max == 1.0
    table = (tmp_path / "demo" / "results.md").read_text()
    low, high = by_name["b"].ratio_min, by_name["b"].ratio_max
    assert low is not None and high is not None and f"x{low:.2f}-x{high:.2f}" in table


def test_machine_load_is_recorded_before_and_after_each_workload(tmp_path: Path) -> None:
    readings = iter([(1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (7.0, 8.0, 9.0), (0.5, 0.5, 0.5)])
    journal = _Journal()
    run_benchmark(
        "demo",
        [Workload("w1", ops=1, rounds=1), Workload("w2", ops=1, rounds=1)],
        [journal.contender("a")],
        baseline="a",
        out_dir=tmp_path,
        load_average=lambda: next(readings),
    )
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    first, second = saved["workloads"]
    assert (first["load_before"], first["load_after"]) == ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert (second["load_before"], second["load_after"]) == ([7.0, 8.0, 9.0], [0.5, 0.5, 0.5])
    assert first["cpu_count"] >= 1
    table = (tmp_path / "demo" / "results.md").read_text()
    assert "load average 1/5/15 min 1.00/2.00/3.00 before, 4.00/5.00/6.00 after" in table
    assert f"{first['cpu_count']} CPUs" in table


def _sleeper() -> subprocess.Popen[bytes]:
    return _processes.track_process(
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    )


def test_a_contender_that_starts_a_process_then_fails_is_a_row_and_its_process_stops(
    tmp_path: Path,
) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def failing_setup() -> Any:
        started.append(_sleeper())
        raise RuntimeError("connection attempt timed out")

    journal = _Journal()
    by_name = _run(
        tmp_path, [journal.contender("base"), Contender("peer", failing_setup, _slow_op)]
    )
    assert by_name["peer"].skipped == "start: RuntimeError: connection attempt timed out"
    assert by_name["peer"].ratio is None and by_name["base"].ratio == 1.0
    assert len(started) == 1  # no further rounds after the failure
    assert started[0].poll() is not None  # stopped by the harness, not left behind
    assert started[0] not in _processes.running()
    table = (tmp_path / "demo" / "results.md").read_text()
    assert "skipped: start: RuntimeError: connection attempt timed out" in table


def test_a_failing_round_or_teardown_is_a_row_and_everything_is_torn_down(
    tmp_path: Path,
) -> None:
    journal = _Journal()
    processes: list[subprocess.Popen[bytes]] = []

    def setup() -> dict[str, int]:
        processes.append(_sleeper())
        return {"calls": 0}

    def flaky(state: dict[str, int], index: int) -> None:
        if len(processes) == 2:
            raise OSError("peer went away")

    def bad_teardown(state: Any) -> None:
        raise RuntimeError("close failed")

    contenders = [
        journal.contender("base"),
        Contender("flaky", setup, flaky, lambda state: journal.events.append(("flaky", "td"))),
        Contender("sticky", dict, lambda state, i: None, bad_teardown),
    ]
    by_name = _run(tmp_path, contenders)
    assert by_name["flaky"].skipped == "round 2: OSError: peer went away"
    assert journal.events.count(("flaky", "td")) == 2  # torn down after the failed round too
    assert by_name["sticky"].skipped == "tear-down: RuntimeError: close failed"
    assert all(process.poll() is not None for process in processes)
    assert by_name["base"].skipped is None and len(by_name["base"].round_throughputs) == 5


@pytest.mark.parametrize("lifecycle", list(Lifecycle))
def test_concurrent_workers_stop_at_the_first_failure(tmp_path: Path, lifecycle: Lifecycle) -> None:
    calls: list[int] = []
    torn_down: list[bool] = []

    async def op(state: Any, index: int) -> None:
        calls.append(index)
        await asyncio.sleep(0)  # a real op waits for a reply
        if index == 3:
            raise ValueError("bad reply")

    contenders = [
        Contender("base", dict, _fast_op_dict),
        Contender("broken", dict, op, lambda state: torn_down.append(True)),
    ]
    by_name = _run(tmp_path, contenders, ops=1000, concurrency=4, lifecycle=lifecycle)
    assert by_name["broken"].skipped == "round 1: ValueError: bad reply"
    assert torn_down == [True] and len(calls) < 1000


async def _fast_op_dict(state: dict[str, int], i: int) -> None:
    state[str(i)] = i


def test_readiness_is_probed_until_the_contender_answers(tmp_path: Path) -> None:
    answers = iter([ConnectionRefusedError("not yet"), False, True])
    probes: list[str] = []
    journal = _Journal()

    def ready(state: Any) -> bool:
        probes.append("probe")
        answer = next(answers, True)
        if isinstance(answer, Exception):
            raise answer
        return answer

    by_name = _run(
        tmp_path,
        [journal.contender("base"), journal.contender("peer", ready=ready)],
        rounds=1,
    )
    assert by_name["peer"].skipped is None and probes == ["probe"] * 3
    assert journal.events.index(("peer", "setup")) < journal.events.index(("peer", "op"))


def test_a_contender_never_ready_is_a_row_and_is_torn_down(tmp_path: Path) -> None:
    journal = _Journal()

    async def never(state: Any) -> None:
        raise ConnectionRefusedError("port closed")

    by_name = _run(
        tmp_path,
        [journal.contender("base"), journal.contender("peer", ready=never, ready_timeout_s=0.2)],
    )
    reason = by_name["peer"].skipped
    assert reason is not None and reason.startswith("readiness: NotReady: not ready after 0.2 s")
    assert "ConnectionRefusedError: port closed" in reason
    assert ("peer", "op") not in journal.events
    assert journal.events.count(("peer", "teardown")) == 1


def test_baseline_must_be_a_contender(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="baseline"):
        run_benchmark(
            "x",
            [Workload("w", ops=1)],
            [Contender("a", setup=dict, op=_slow_op)],
            baseline="b",
            out_dir=tmp_path,
        )
    with pytest.raises(ValueError):
        Workload("w", ops=0)
    assert Workload("w", ops=1).rounds >= 5


def test_tables_and_line_plots(tmp_path: Path) -> None:
    table = write_table(tmp_path, "hits", ["policy", "hit ratio"], [["lru", 0.5], ["arc", 0.6]])
    assert "| arc | 0.6 |" in table
    assert json.loads((tmp_path / "hits.json").read_text())[1] == {
        "policy": "arc",
        "hit ratio": 0.6,
    }
    plot_lines(
        tmp_path / "curve.png",
        {"lru": [(1, 0.1), (2, 0.2)]},
        title="t",
        xlabel="size",
        ylabel="hit ratio",
    )
    assert (tmp_path / "curve.png").stat().st_size > 0
