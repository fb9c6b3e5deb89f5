"""The command line as a user meets it: --version, the demo, bench listing."""

from __future__ import annotations

import json
import subprocess
import sys

from blocks import __version__


def run_blocks(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blocks", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version() -> None:
    result = run_blocks("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"blocks {__version__}"


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


def test_bench_lists_benchmarks() -> None:
    result = run_blocks("bench")
    assert result.returncode == 0
    assert result.stdout.startswith("available benchmarks: ") and "transport" in result.stdout
    assert "peers" not in result.stdout and "null_s3" not in result.stdout
    listed = run_blocks("bench", "--json")
    assert "transport" in json.loads(listed.stdout)


def test_bench_unknown_name_names_the_valid_ones() -> None:
    result = run_blocks("bench", "nosuch")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: no benchmark named 'nosuch'") and "transport" in line


def test_unknown_command_is_an_error() -> None:
    result = run_blocks("no-such-block")
    assert result.returncode == 2
