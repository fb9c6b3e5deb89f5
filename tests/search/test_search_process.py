"""A search node as a real process, driven through the CLI; data survives a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BLOCKS = [sys.executable, "-m", "blocks"]


def start_node(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            *BLOCKS,
            "search",
            "serve",
            "--dim",
            "4",
            "--metric",
            "l2",
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(
            f"node did not start: {process.stderr.read() if process.stderr else ''}"
        )
    return process, json.loads(line)["address"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BLOCKS, "search", *args, "--json"], capture_output=True, text=True, timeout=180
    )


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.process
def test_index_query_restart(tmp_path: Path) -> None:
    vectors = np.eye(4, dtype=np.float32).repeat(3, axis=0) * np.arange(1, 13)[:, None]
    np.save(tmp_path / "v.npy", vectors.astype(np.float32))
    (tmp_path / "docs.txt").write_text("d1\tthe quick brown fox\nd2\tlazy dogs sleep\n\n")
    process, address = start_node(tmp_path / "data")
    try:
        done = cli("index", "--address", address, "--vectors", str(tmp_path / "v.npy"))
        assert done.returncode == 0, done.stderr
        assert "indexed 12/12" in done.stderr and json.loads(done.stdout)["vectors"] == 12
        done = cli("index", "--address", address, "--texts", str(tmp_path / "docs.txt"))
        assert done.returncode == 0 and json.loads(done.stdout)["documents"] == 2
        done = cli("query", "--address", address, "--vector", "0,0,0,0", "-k", "2")
        assert json.loads(done.stdout)[0]["ids"] == [0, 1]  # squared norms 1, 4, 9, ...

        done = cli("query", "--address", address, "--text", "brown fox")
        assert [h["id"] for h in json.loads(done.stdout)] == ["d1"]
        suggested = cli("suggest", "--address", address, "bro")
        assert suggested.returncode == 0, suggested.stderr  # once empty at load 10: say why
        assert json.loads(suggested.stdout) == [["brown fox", 1]]
        bad = cli("query", "--address", address, "--vector", "1,2", "-k", "2")
        assert bad.returncode == 2 and bad.stderr.startswith("error: ")  # InvalidArgument
    finally:
        stop(process)
    process, address = start_node(tmp_path / "data")
    try:
        info = json.loads(cli("info", "--address", address).stdout)
        assert info["vectors"] == 12 and info["documents"] == 2
    finally:
        stop(process)
