"""Trace parsing, the simulator and ``blocks cache simulate``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.cache.simulate import make_policy, simulate
from blocks.cache.traces import load_trace, parse_lines
from blocks.cache.workloads import loop_trace, recency_trace, zipf_with_scans
from blocks.cli import main
from blocks.core.errors import InvalidArgument


def test_lirs_format() -> None:
    assert parse_lines(["1\n", "\n", "# note\n", " 22 \n", "1\n"], "lirs") == [1, 22, 1]
    assert parse_lines(["5", "*", "6"], "lirs") == [5]
    with pytest.raises(InvalidArgument, match="line 2"):
        parse_lines(["1", "x"], "lirs")


def test_arc_format_expands_runs() -> None:
    assert parse_lines(["10 3 0 1", "7 1 0 2"], "arc") == [10, 11, 12, 7]
    for bad in (["10"], ["a 1 0 0"], ["1 0 0 0"], ["1 99999999 0 0"]):
        with pytest.raises(InvalidArgument):
            parse_lines(bad, "arc")


def test_text_format_and_limits() -> None:
    assert parse_lines(["user:1", " user:2 ", "", "#x"], "text") == ["user:1", "user:2"]
    with pytest.raises(InvalidArgument, match="more than 2"):
        parse_lines(["1", "2", "3"], "lirs", requests_max=2)
    with pytest.raises(InvalidArgument, match="unknown trace format"):
        parse_lines([], "csv")


@given(st.lists(st.text(max_size=12), max_size=20), st.sampled_from(["lirs", "arc", "text"]))
def test_fuzzed_lines_only_raise_invalid_argument(lines: list[str], trace_format: str) -> None:
    try:
        keys = parse_lines(lines, trace_format, requests_max=10_000)
    except InvalidArgument:
        return
    assert isinstance(keys, list)


def test_load_trace_gzip_and_errors(tmp_path: Path) -> None:
    compressed = tmp_path / "t.lirs.gz"
    with gzip.open(compressed, "wt") as handle:
        handle.write("1\n2\n1\n")
    assert load_trace(compressed) == [1, 2, 1]
    arc = tmp_path / "t.arc"
    arc.write_text("4 2 0 0\n")
    assert load_trace(arc) == [4, 5]
    broken = tmp_path / "broken.lirs.gz"
    broken.write_bytes(gzip.compress(b"1\n2\n")[:-6])
    with pytest.raises(InvalidArgument):
        load_trace(broken)
    with pytest.raises(InvalidArgument):
        load_trace(tmp_path / "missing.lirs")
    binary = tmp_path / "binary.lirs"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InvalidArgument):
        load_trace(binary)


def test_simulate_results_and_errors() -> None:
    trace = loop_trace(300, 15)
    results = simulate(trace, ["lru", "optimal"], [10, 20])
    table = {(r.policy, r.size): r.hit_ratio for r in results}
    assert table[("lru", 10)] == 0.0
    assert table[("lru", 20)] == table[("optimal", 20)] == 285 / 300
    assert 0 < table[("optimal", 10)] < 1
    with pytest.raises(InvalidArgument, match="unknown policy"):
        simulate(trace, ["fifo"], [10])
    with pytest.raises(InvalidArgument):
        simulate(trace, ["lru"], [0])
    with pytest.raises(InvalidArgument):
        make_policy("nope", 3)


def test_workload_generators_validate() -> None:
    import random

    with pytest.raises(InvalidArgument):
        loop_trace(-1, 3)
    with pytest.raises(InvalidArgument):
        loop_trace(3, 0)
    with pytest.raises(InvalidArgument):
        zipf_with_scans(3, random.Random(0), hot_keys=0, scan_every=1)
    assert recency_trace(5, random.Random(0)) == recency_trace(5, random.Random(0))


def test_cli_simulate_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "loop.lirs"
    trace.write_text("\n".join(str(k) for k in loop_trace(600, 30)))
    plot = tmp_path / "curves.png"
    argv = ["cache", "simulate", "--trace", str(trace), "--size", "20,40", "--json"]
    assert main([*argv, "--policy", "lru,wtinylfu,optimal", "--plot", str(plot)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(row["policy"], row["size"]) for row in rows} == {
        (policy, size) for policy in ("lru", "wtinylfu", "optimal") for size in (20, 40)
    }
    assert all(0.0 <= row["hit_ratio"] <= 1.0 for row in rows)
    lru_20 = next(r for r in rows if r["policy"] == "lru" and r["size"] == 20)
    assert lru_20["hit_ratio"] == 0.0
    assert plot.stat().st_size > 1000


def test_cli_simulate_text_and_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text("a\nb\na\n")
    assert main(["cache", "simulate", "--trace", str(trace), "--size", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "optimal" in out and "33.33%" in out
    assert main(["cache", "simulate", "--trace", str(tmp_path / "none"), "--size", "2"]) == 2
    with pytest.raises(SystemExit):
        main(["cache", "simulate", "--trace", str(trace), "--size", "0"])
    with pytest.raises(SystemExit):
        main(["cache", "simulate", "--trace", str(trace), "--size", "2", "--policy", "fifo"])
