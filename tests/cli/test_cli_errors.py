"""The error paths a new user meets print one line ``error: <what>: <what to do>`` and exit
with the documented code; ``--debug`` adds the traceback.

Most paths run ``blocks.cli.main`` in this process (an interpreter start costs seconds on a
loaded machine); one runs the real ``blocks`` process end to end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.cli import main
from blocks.cli_errors import ExitCode, describe
from blocks.core import errors

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_blocks(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blocks", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and lines[0].count(": ") >= 2, lines[0]
    assert "Traceback" not in result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    return lines[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_blob_ls_with_no_server() -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"
    line = assert_one_error_line(
        run_blocks("blob", "ls", "--endpoint", endpoint), ExitCode.UNAVAILABLE
    )
    assert "connection refused" in line and "blocks blob serve" in line


def test_queue_send_with_no_server(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"
    line = assert_one_error_line(
        run_main(capsys, "queue", "send", "jobs", "x", "--address", address),
        ExitCode.UNAVAILABLE,
    )
    assert f"connection refused by {address}" in line


def test_kv_get_with_no_node(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"
    line = assert_one_error_line(
        run_main(capsys, "kv", "get", "x", "--cluster", address, "--timeout", "2"),
        ExitCode.UNAVAILABLE,
    )
    assert f"connection refused by {address}" in line and "blocks kv serve" in line


def test_blob_wrong_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "blocks", "blob", "serve"),
            *("--data-dir", str(tmp_path / "blob"), "--listen", "127.0.0.1:0"),
            *("--access-key", "K", "--secret-key", "S", "--no-fsync", "--json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert server.stdout is not None
        endpoint = json.loads(server.stdout.readline())["endpoint"]
        client = ("--endpoint", endpoint, "--access-key", "K")
        assert (
            run_main(capsys, "blob", "mb", "photos", *client, "--secret-key", "S").returncode == 0
        )
        result = run_main(capsys, "blob", "ls", *client, "--secret-key", "WRONG")
        line = assert_one_error_line(result, ExitCode.AUTH)
        assert "--secret-key" in line
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def test_inference_serve_unknown_model_fails_before_loading(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("torch")
    result = run_main(capsys, "inference", "serve", "--model", "nosuch", "--listen", "127.0.0.1:0")
    line = assert_one_error_line(result, ExitCode.NOT_FOUND)
    assert "nosuch" in line and "--model" in line


def test_busy_port_fails_before_the_model_loads(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    # A model that does not exist would fail later: the port check must come first.
    result = run_main(
        capsys, "inference", "serve", "--model", "nosuch", "--listen", f"127.0.0.1:{busy_port}"
    )
    line = assert_one_error_line(result, ExitCode.LOCAL)
    assert f"127.0.0.1:{busy_port}" in line and "address already in use" in line


@pytest.mark.parametrize("block", ["queue", "cache", "ratelimit"])
def test_busy_port(block: str, busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main(capsys, block, "serve", "--listen", f"127.0.0.1:{busy_port}")
    line = assert_one_error_line(result, ExitCode.LOCAL)
    assert "address already in use" in line


def test_busy_metrics_port(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main(
        capsys,
        "queue",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        f"127.0.0.1:{busy_port}",
    )
    line = assert_one_error_line(result, ExitCode.LOCAL)
    assert "--metrics-listen" in line


def test_queue_serve_data_dir_that_cannot_exist(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main(
        capsys, "queue", "serve", "--data-dir", "/proc/nope", "--listen", "127.0.0.1:0"
    )
    line = assert_one_error_line(result, ExitCode.LOCAL)
    assert "/proc/nope" in line


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"
    result = run_main(capsys, "--debug", "queue", "send", "jobs", "x", "--address", address)
    assert result.returncode == ExitCode.UNAVAILABLE
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: connection refused")


def test_deprecated_host_and_port_still_work_with_one_warning(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_main(capsys, "cache", "serve", "--host", "127.0.0.1", "--port", str(busy_port))
    warning, error = result.stderr.splitlines()
    assert warning == "warning: --host and --port are deprecated; use --listen HOST:PORT"
    assert error.startswith("error: cannot listen on") and result.returncode == ExitCode.LOCAL


def test_describe_maps_every_library_error_to_one_line() -> None:
    cases = [
        (errors.InvalidArgument("bad"), ExitCode.USAGE),
        (errors.NotFound("no queue jobs"), ExitCode.NOT_FOUND),
        (errors.AlreadyExists("exists"), ExitCode.CONFLICT),
        (errors.Conflict("version"), ExitCode.CONFLICT),
        (errors.Unauthenticated("no token"), ExitCode.AUTH),
        (errors.PermissionDenied("no"), ExitCode.AUTH),
        (errors.Unavailable("down"), ExitCode.UNAVAILABLE),
        (errors.Timeout("slow"), ExitCode.UNAVAILABLE),
        (errors.Overloaded("busy", retry_after_ms=20), ExitCode.CONFLICT),
        (errors.Corruption("bad crc"), ExitCode.CORRUPTION),
        (errors.Internal("bug\nthere"), ExitCode.INTERNAL),
        (OSError(28, "No space left on device", "/data"), ExitCode.LOCAL),
        (PermissionError(13, "Permission denied", "/root/x"), ExitCode.LOCAL),
        (RuntimeError("surprise"), ExitCode.INTERNAL),
    ]
    for error, code in cases:
        line, got = describe(error)
        assert got == code, (error, got)
        assert line.startswith("error: ") and "\n" not in line, line
    assert "retry after 20 ms" in describe(errors.Overloaded("busy", retry_after_ms=20))[0]
    assert "no space left on device: /data" in describe(OSError(28, "x", "/data"))[0]
