"""Every ``blocks <block> serve`` at once, with its default port: all listen, all answer
``/metrics`` and ``/health`` on ``--metrics-listen``, and no two defaults collide."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from blocks.cli_server import DEFAULT_PORTS

STARTUP_DEADLINE_S = 90.0  # generous: ten interpreters start at once on a loaded machine

# block -> the minimal extra flags its server needs (a data dir, a node id, a model).
MINIMAL_FLAGS: dict[str, list[str]] = {
    "kv": ["--node-id", "a", "--data-dir", "{tmp}/kv"],
    "pubsub": [],
    "queue": [],
    "counters": [],
    "ratelimit": [],
    "sequencer": ["--data-dir", "{tmp}/sequencer"],
    "cache": [],
    "search": ["--dim", "8"],
    "inference": ["--model", "tiny-random", "--device", "cpu", "--threads", "1", "--access-log"],
    "blob": ["--data-dir", "{tmp}/blob", "--access-log"],
}


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def _first_lines(processes: dict[str, subprocess.Popen[str]]) -> dict[str, dict[str, Any]]:
    """Each server's start-up JSON line, read as they come (all start in parallel)."""
    selector = selectors.DefaultSelector()
    for block, process in processes.items():
        assert process.stdout is not None
        selector.register(process.stdout, selectors.EVENT_READ, block)
    lines: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while len(lines) < len(processes) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            block = key.data
            line = key.fileobj.readline()  # type: ignore[union-attr]
            selector.unregister(key.fileobj)
            if not line:
                error = processes[block].stderr.read()  # type: ignore[union-attr]
                if "address already in use" in error:  # another process took it meanwhile
                    pytest.skip(f"{block}'s default port was taken during the test: {error}")
                raise AssertionError(f"{block} serve exited: {error}")
            lines[block] = json.loads(line)
    missing = set(processes) - set(lines)
    assert not missing, f"not started within {STARTUP_DEADLINE_S} s: {sorted(missing)}"
    return lines


def test_default_ports_are_distinct() -> None:
    assert len(set(DEFAULT_PORTS.values())) == len(DEFAULT_PORTS)


def test_every_server_starts_with_its_defaults_at_once(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    busy = [block for block, port in DEFAULT_PORTS.items() if not _port_free(port)]
    if busy:
        pytest.skip(f"default ports held by another process on this machine: {busy}")
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    processes: dict[str, subprocess.Popen[str]] = {}
    try:
        for block, flags in MINIMAL_FLAGS.items():
            command = [sys.executable, "-m", "blocks", block, "serve"]
            command += [flag.format(tmp=tmp_path) for flag in flags]
            command += ["--metrics-listen", "127.0.0.1:0", "--json"]
            processes[block] = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        lines = _first_lines(processes)
        for block, line in lines.items():
            host, _, port = line["address"].rpartition(":")
            assert int(port) == DEFAULT_PORTS[block], (block, line)
            with socket.create_connection((host, int(port)), timeout=10):
                pass
            assert line["storage"], line
            status, body = _get(f"http://{line['metrics']}/health")
            assert status == 200 and body.strip() == "ok", (block, body)
            status, body = _get(f"http://{line['metrics']}/metrics")
            assert status == 200 and "# TYPE" in body, (block, body[:200])
        assert lines["queue"]["storage"] == "memory (nothing survives a restart)"
        assert lines["blob"]["storage"] == str(tmp_path / "blob")
        # The HTTP servers log one line per request with --access-log.
        assert _get(f"http://{lines['inference']['address']}/health")[0] == 200
        assert _get(f"http://{lines['blob']['address']}/")[0] == 200
        logs = {}
        for block in ("inference", "blob"):
            processes[block].send_signal(signal.SIGTERM)
            logs[block] = processes[block].communicate(timeout=30)[1]
        assert "GET /health" in logs["inference"], logs["inference"]
        assert "GET / 200" in logs["blob"], logs["blob"]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            for stream in (process.stdout, process.stderr):
                if stream is not None and not stream.closed:
                    stream.close()
