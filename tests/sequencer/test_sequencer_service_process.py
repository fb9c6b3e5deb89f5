"""Sequencer server processes driven through the CLI: two on their own data dirs sharing a
lock-file lease table, and a second one on a data dir already in use, which must refuse."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.cli import main as blocks_main
from blocks.sequencer.snowflake import decode

BLOCKS = [sys.executable, "-m", "blocks"]


def serve_argv(data_dir: Path, leases: Path) -> list[str]:
    return [
        *BLOCKS,
        "sequencer",
        "serve",
        "--data-dir",
        str(data_dir),
        "--lease-from",
        f"file://{leases}",
        "--listen",
        "127.0.0.1:0",
        "--json",
    ]


def start_server(data_dir: Path, leases: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    process = subprocess.Popen(
        serve_argv(data_dir, leases),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(
            f"server did not start: {process.stderr.read() if process.stderr else ''}"
        )
    return process, json.loads(line)


SLOW = ("--timeout", "60")  # per call: a loaded machine can take over 10 s to connect


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    """One verb through ``blocks.cli.main`` in this process: the same parsing, client and
    printing as ``blocks sequencer ...`` without a Python start-up per verb (about a second
    each on a loaded machine); the exit code across a real process is checked below."""
    code = blocks_main(["sequencer", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.process
def test_two_servers_lease_distinct_workers_and_stop_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = []
    try:
        for k in range(2):
            servers.append(start_server(tmp_path / f"node{k}", tmp_path / "leases"))
        (_, first), (_, second) = servers
        assert first["worker_id"] != second["worker_id"]
        ids_a = cli(capsys, "next", "--count", "500", "--address", str(first["address"]), *SLOW)
        ids_b = cli(capsys, "next", "--count", "500", "--address", str(second["address"]), *SLOW)
        assert isinstance(ids_a, list) and isinstance(ids_b, list)
        assert ids_a == sorted(ids_a) and len(set(ids_a) | set(ids_b)) == 1000
        assert {decode(v).worker_id for v in ids_a} == {first["worker_id"]}
        tickets = cli(
            capsys, "tickets", "--count", "10", "--address", str(second["address"]), *SLOW
        )
        assert tickets == {"start": 1, "stop": 11}
        # A second server on a data dir in use refuses at start (it used to take the next
        # worker id and share the first one's ticket state).
        twin = subprocess.run(
            serve_argv(tmp_path / "node0", tmp_path / "leases"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert twin.returncode != 0 and twin.stdout == ""
        assert "in use by another sequencer" in twin.stderr, twin.stderr
        bad = subprocess.run(
            [*BLOCKS, "sequencer", "next", "--count", "0", "--address", str(first["address"])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 2 and bad.stderr.startswith("error: ")  # InvalidArgument
        assert cli(capsys, "decode", str(ids_a[0]))["worker_id"] == first["worker_id"]  # type: ignore[index]
    finally:
        for process, _ in servers:
            process.send_signal(signal.SIGTERM)
        for process, _ in servers:
            try:
                assert process.wait(timeout=20) == 0
            finally:
                if process.poll() is None:
                    process.kill()
