"""The request-rate sweep: its window arithmetic, and its quick mode against the tiny model.

The window tests build outcomes by hand, so they say exactly which tokens count; the quick
run starts a real ``blocks inference serve`` on the tiny random model and checks the
report's shape and that its throughput is the window's tokens over the window's length
(never that anything is fast).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from benchmarks import _sweep_servers, inference_sweep
from benchmarks._sweep_core import (
    MAX_RATE,
    Outcome,
    Planned,
    RateRow,
    plan_arrivals,
    plan_requests,
    rate_row,
    saturation,
    window,
)

PROBE_MIB = 16  # the quick mode's 128 MiB probes took ~3 s a pair at load 9: shape, not speed


@pytest.fixture
def small_probes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The real bandwidth probes on a ``PROBE_MIB`` buffer; returns the buffer sizes the
    benchmark asked the read probe for, one entry a call."""
    asked: list[int] = []
    read, copy = inference_sweep.read_bandwidth_gb_s, inference_sweep.copy_bandwidth_gb_s

    def small_read(buffer_mib: int, cpu_time: bool = False) -> float:
        asked.append(buffer_mib)
        return read(PROBE_MIB, cpu_time)

    def small_copy(buffer_mib: int, cpu_time: bool = False) -> float:
        return copy(PROBE_MIB, cpu_time)

    monkeypatch.setattr(inference_sweep, "read_bandwidth_gb_s", small_read)
    monkeypatch.setattr(inference_sweep, "copy_bandwidth_gb_s", small_copy)
    return asked


def _planned(arrivals: list[float]) -> list[Planned]:
    return [Planned(i, t, "a prompt", 8) for i, t in enumerate(arrivals)]


def _outcome(index: int, sent: float, times: list[float], tokens: int | None = None) -> Outcome:
    return Outcome(index, sent, list(times), len(times) if tokens is None else tokens)


def test_poisson_window_leaves_out_the_empty_start_and_the_draining_tail() -> None:
    planned = _planned([0.0, 1.0, 2.0, 10.0])
    outcomes = [
        _outcome(0, 0.0, [0.5, 1.0, 2.0]),  # the first finish, at 2.0
        _outcome(1, 1.0, [3.0, 4.0, 5.0]),
        _outcome(2, 2.0, [9.0, 11.0, 30.0]),  # 11.0 and 30.0 are in the tail
        _outcome(3, 10.0, [20.0, 25.0]),  # all in the tail
    ]
    assert window(planned, outcomes) == (2.0, 10.0)
    row = rate_row("x", 0.4, planned, outcomes)
    assert row.window_s == 8.0
    assert row.window_tokens == 5  # 2.0, 3.0, 4.0, 5.0, 9.0
    assert row.throughput_tok_s == 5 / 8
    # From first arrival to last finish it would have been 11 tokens over 30 s: not reported.
    assert row.throughput_tok_s != 11 / 30


def test_all_at_once_window_runs_to_the_median_finish() -> None:
    planned = plan_arrivals([("p", 4)] * 3, MAX_RATE, seed=0)
    assert [p.arrival_s for p in planned] == [0.0, 0.0, 0.0]
    outcomes = [
        _outcome(0, 0.0, [0.5]),  # ends at once (end of sequence): not the window's end
        _outcome(1, 0.0, [1.0, 2.0, 3.0, 4.0]),
        _outcome(2, 0.0, [1.0, 2.0, 3.0], tokens=6),  # two tokens a chunk
    ]
    row = rate_row("x", MAX_RATE, planned, outcomes)
    assert (row.window_start_s, row.window_s) == (0.0, 3.0)  # two of three have finished
    assert row.window_tokens == 1 + 3 + 6
    assert math.isinf(row.offered_tok_s) and row.saturated


def test_failures_are_counted_and_percentiles_use_finished_requests_only() -> None:
    planned = _planned([0.0, 1.0, 2.0])
    outcomes = [
        _outcome(0, 0.0, [0.5, 1.5]),
        Outcome(1, 1.0, error="HTTP 429: b'busy'"),
        _outcome(2, 2.0, [2.25, 2.75, 3.25]),
    ]
    row = rate_row("x", 1.0, planned, outcomes)
    assert (row.requests, row.failures, row.first_error) == (3, 1, "HTTP 429: b'busy'")
    assert row.ttft_p50_s == 0.25 and row.ttft_p99_s == 0.5
    assert row.tpot_p50_ms == 500.0 and row.tpot_p99_ms == 1000.0


def test_the_workload_is_seeded_and_the_same_prompts_arrive_at_every_rate() -> None:
    requests = plan_requests(20, seed=3, prompt_words=(2, 5), output_tokens=(4, 9))
    assert requests == plan_requests(20, seed=3, prompt_words=(2, 5), output_tokens=(4, 9))
    slow, fast = plan_arrivals(requests, 0.5, seed=3), plan_arrivals(requests, 8.0, seed=3)
    assert [(p.prompt, p.max_tokens) for p in slow] == [(p.prompt, p.max_tokens) for p in fast]
    assert slow[-1].arrival_s > fast[-1].arrival_s > 0
    with pytest.raises(ValueError):
        plan_arrivals(requests, 0.0, seed=3)


def test_saturation_is_the_first_rate_that_falls_behind_what_was_offered() -> None:
    planned = _planned([0.0, 4.0, 8.0])  # realised: 0.25 requests/s

    def row(rate: float, inside: int, after: int) -> RateRow:
        times = [1.0 + i * (6.0 / inside) for i in range(inside)]
        times += [8.5 + i for i in range(after)]  # in the draining tail, not counted
        outcomes = [_outcome(0, 0.0, [0.5, 1.0]), _outcome(1, 4.0, times), _outcome(2, 8.0, [9.0])]
        return rate_row("x", rate, planned, outcomes)

    # 1 + 7 tokens in the 7 s window against 0.25/s x (2 + 7 + 1) / 3 tokens offered.
    keeps_up = row(0.25, 7, 0)
    # 1 + 2 tokens in the window against 0.25/s x (2 + 12 + 1) / 3 tokens offered.
    falls_behind = row(0.5, 2, 10)
    assert keeps_up.throughput_tok_s == pytest.approx(8 / 7)
    assert keeps_up.offered_tok_s == pytest.approx(0.25 * 10 / 3)
    assert falls_behind.throughput_tok_s == pytest.approx(3 / 7)
    assert falls_behind.offered_tok_s == pytest.approx(0.25 * 15 / 3)
    assert not keeps_up.saturated and falls_behind.saturated
    kept, saturated, best = saturation([keeps_up, falls_behind])
    assert (kept, saturated) == (0.25, 0.5)
    assert best == max(keeps_up.throughput_tok_s, falls_behind.throughput_tok_s)


def test_quick_mode_against_the_tiny_model(tmp_path: Path, small_probes: list[int]) -> None:
    args = argparse.Namespace(
        out=str(tmp_path),
        model="tiny-random",
        rates="4",
        requests=4,
        threads=1,
        hf_batch=4,
        seed=0,
        quick=True,
    )
    assert inference_sweep.main(args) == 0
    out = tmp_path / "inference"
    raw = json.loads((out / "sweep_raw.json").read_text())
    assert set(raw) >= {"method", "machine", "bandwidth_gb_s", "rows", "skipped"}
    # No GGUF: skipped rows, no fakes.
    assert set(raw["skipped"]) == {"hf static", "llama.cpp", "llama-server"}
    (row,) = raw["rows"]["blocks"]
    assert row["rate"] == "4/s" and row["requests"] == 4 and row["failures"] == 0
    planned = plan_arrivals(plan_requests(4, 0, (4, 12), (4, 12)), 4.0, seed=0)
    start, end = row["window_start_s"], row["window_start_s"] + row["window_s"]
    # Either [first finish, last arrival] or [first arrival, median finish]: never the tail.
    assert end == pytest.approx(planned[-1].arrival_s) or start == 0.0
    assert row["window_s"] > 0
    assert row["throughput_tok_s"] == pytest.approx(row["window_tokens"] / row["window_s"])
    table = json.loads((out / "sweep.json").read_text())
    assert [r["contender"] for r in table] == ["blocks", "hf static", "llama.cpp", "llama-server"]
    assert table[1]["first error"].startswith("skipped: ")
    (roof,) = json.loads((out / "sweep_roofline.json").read_text())
    assert roof["contender"] == "blocks" and roof["batch-1 decode tok/s"] != "-"
    assert small_probes == [128]  # the quick mode's buffer, measured once


def test_the_roofline_is_read_bandwidth_over_weights_and_kv_read_per_token() -> None:
    server = _sweep_servers.Server("x", lambda port: [], 1_000_000, "float32", 1_000)
    measured = inference_sweep.Batch1(tok_s=10.0, context=100.0)
    row = dict(zip(inference_sweep.ROOFLINE_COLUMNS, inference_sweep.roofline_row(
        server, measured, read_gb_s=0.022, copy_gb_s=0.044
    ), strict=True))  # fmt: skip
    # 1 MB of weights + 100 positions x 1 kB of KV = 1.1 MB a token; 22 MB/s reads 20 a second.
    assert row["MB per token"] == "1" and row["roofline tok/s"] == "20.0"
    assert row["fraction"] == "50%"
    assert row["fraction of max(read, copy)"] == "25%"  # copy counts written bytes too


def test_batch1_only_measures_each_round_against_its_own_bandwidth(
    tmp_path: Path, small_probes: list[int]
) -> None:
    args = argparse.Namespace(
        out=str(tmp_path), model="tiny-random", rates=None, requests=4, threads=1, hf_batch=4,
        seed=0, quick=True, batch1_only=True, rounds=2, contenders="blocks",
    )  # fmt: skip
    assert inference_sweep.main(args) == 0
    rows = json.loads((tmp_path / "inference" / "batch1_roofline.json").read_text())
    assert [(r["round"], r["contender"]) for r in rows] == [("1", "blocks"), ("2", "blocks")]
    assert all(r["batch-1 decode tok/s"] != "-" and r["fraction"].endswith("%") for r in rows)
    assert small_probes == [128, 128]  # the bandwidth read again for every round


def test_batch1_in_cpu_time_subtracts_the_prefill_and_first_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([10.0, 12.5, 13.0, 20.0, 21.0, 21.5])  # server CPU seconds, read in turn
    monkeypatch.setattr(inference_sweep, "process_cpu_s", lambda pid: next(clock))

    def drive(port: int, plan: list[Planned], sequential: bool = False) -> list[Outcome]:
        (p,) = plan
        outcome = _outcome(p.index, 0.0, [1.0] * p.max_tokens)
        outcome.prompt_tokens = 10
        return [outcome]

    monkeypatch.setattr(inference_sweep, "drive", drive)
    plan = [Planned(0, 0.0, "a", 21), Planned(1, 0.0, "b", 21)]
    best = inference_sweep.batch1_decode_cpu(port=1, pid=2, plan=plan)
    # First prompt: 2.5 s for 21 tokens less 0.5 s for one = 2 s for 20 decoded tokens;
    # the second: 1.0 - 0.5 = 0.5 s for 20, the better one.
    assert best.tok_s == pytest.approx(40.0)
    assert best.context == pytest.approx(10 + 21 / 2)


def test_the_rounds_summary_gives_the_true_median_of_an_even_number_of_rounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Four rounds of 10, 20, 30, 40 %: the median is 25 %, the mean of the two middle
    rounds, not the upper-middle round (30 %)."""
    columns = ["round", "contender", "fraction"]
    rows = [[str(i), "ours", f"{v}%"] for i, v in enumerate([40, 10, 30, 20])]
    rows.append(["4", "ours", "-"])  # a round that measured nothing is left out
    inference_sweep._summarise_rounds(columns, rows)
    assert "4 rounds: min 10% median 25% max 40%" in capsys.readouterr().err
