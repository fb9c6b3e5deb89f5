"""The command line as a user meets it: --version, the demo, bench listing (the demo and
``bench --json`` run the real ``python -m blocks``; the rest run ``main`` in process)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from blocks import __version__
from blocks.cli import build_parser, main


def run_blocks(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blocks", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    # In process: the demo and bench tests below run the real ``python -m blocks``.
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"blocks {__version__}"


def test_core_demo_runs_a_cluster_and_survives_a_node_loss() -> None:
    result = run_blocks("demo", "--only", "core", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    # --json: the narration goes to stderr, one JSON report to stdout.
    assert "health check" in result.stderr and "SERVING" in result.stderr
    assert "read 300/300 keys with node-b down" in result.stderr
    assert "refused: Unauthenticated" in result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == 0
    [part] = report["parts"]
    assert part["part"] == "core" and part["status"] == "ok"
    assert any("read 300/300 keys" in line for line in part["lines"])


def test_bench_lists_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("available benchmarks: ") and "transport" in out
    assert "peers" not in out and "null_s3" not in out
    assert main(["bench", "--json"]) == 0
    assert "transport" in json.loads(capsys.readouterr().out)


def test_bench_unknown_name_names_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "nosuch"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: no benchmark named 'nosuch'") and "transport" in line


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["no-such-block"])
    assert exited.value.code == 2
    assert "invalid choice: 'no-such-block'" in capsys.readouterr().err


def test_bench_json_prints_the_reports_and_keeps_stdout_clean(tmp_path: Path) -> None:
    bench_dir = tmp_path / "benchmarks"
    bench_dir.mkdir()
    (bench_dir / "__init__.py").write_text("")
    (bench_dir / "harness.py").write_text("")
    (bench_dir / "helper.py").write_text("VALUE = 1\n")  # no main: not a benchmark
    (bench_dir / "fake.py").write_text(
        "import json, pathlib\n"
        "def main(args):\n"
        "    print('| table |')\n"
        "    out = pathlib.Path(args.out) / 'fake'\n"
        "    out.mkdir(parents=True)\n"
        "    (out / 'results.json').write_text(json.dumps({'rate': 5}))\n"
        "    return 0\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "blocks", "bench", "fake", "--json", "--out", "res"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "| table |" in run.stderr
    assert json.loads(run.stdout) == {
        "benchmark": "fake",
        "exit_code": 0,
        "reports": {"fake/results.json": {"rate": 5}},
    }
    listed = subprocess.run(
        [sys.executable, "-m", "blocks", "bench", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert json.loads(listed.stdout) == ["fake"]


def test_every_command_that_prints_results_takes_json() -> None:
    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    for name, parser in subcommands(build_parser()).items():
        for verb, leaf in (subcommands(parser) or {"": parser}).items():
            flags = {flag for action in leaf._actions for flag in action.option_strings}
            assert "--json" in flags, f"blocks {name} {verb} has no --json"
