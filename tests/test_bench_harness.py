"""The benchmark harness: ratios, skipped peers, and the files it writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import Contender, Skip, Workload, plot_lines, run_benchmark, write_table


def _missing_peer() -> Any:
    raise Skip("peer not installed")


async def _fast_op(state: dict[str, int], i: int) -> None:
    state["calls"] += 1


def _slow_op(state: dict[str, int], i: int) -> None:
    state["calls"] += 1
    time.sleep(0.0005)


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
    workloads = [Workload("ops", ops=50, concurrency=4, rounds=2, warmup_ops=5)]
    # slow is synchronous: concurrency must be 1 for it, so run it in its own workload.
    with pytest.raises(ValueError, match="concurrency=1"):
        run_benchmark("demo", workloads, contenders, baseline="slow", out_dir=tmp_path)
    assert torn_down == ["fast"]  # a failing run still tears down what it set up
    fast_state["calls"], torn_down[:] = 0, []
    results = run_benchmark(
        "demo",
        [Workload("ops", ops=50, rounds=2, warmup_ops=5)],
        contenders,
        baseline="slow",
        out_dir=tmp_path,
    )
    by_name = {r.contender: r for r in results}
    assert fast_state["calls"] == 5 + 2 * 50  # warm-up plus two rounds, every op ran
    assert torn_down == ["fast"]
    assert by_name["slow"].ratio == pytest.approx(1.0)
    assert by_name["fast"].ratio is not None and by_name["fast"].ratio > 1.0
    assert by_name["absent"].skipped == "peer not installed" and by_name["absent"].ratio is None
    assert by_name["slow"].p50_ms >= 0.4  # it sleeps 0.5 ms per op
    assert len(by_name["fast"].round_throughputs) == 2

    directory = tmp_path / "demo"
    saved = json.loads((directory / "results.json").read_text())
    assert saved["baseline"] == "slow" and len(saved["results"]) == 3
    table = (directory / "results.md").read_text()
    assert "skipped: peer not installed" in table and "x1.00" in table
    assert (directory / "results.png").stat().st_size > 0


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
