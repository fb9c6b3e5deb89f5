"""The command line as a user meets it: --version, the demo, bench listing."""

from __future__ import annotations

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
    result = run_blocks("demo", "--only", "core")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "health check" in result.stdout and "SERVING" in result.stdout
    assert "read 300/300 keys with node-b down" in result.stdout
    assert "refused: Unauthenticated" in result.stdout


def test_bench_lists_benchmarks() -> None:
    result = run_blocks("bench")
    assert result.returncode == 0
    assert "transport" in result.stderr


def test_unknown_command_is_an_error() -> None:
    result = run_blocks("no-such-block")
    assert result.returncode == 2
