"""Clusters of real server processes for fault-injection tests.

A ``ProcessCluster`` runs N nodes of one server, each a real ``python -m blocks <block> serve``
(or any command a ``ServerSpec`` builds) on 127.0.0.1 ports picked here, with its own data
directory, a shared bearer token and its own log file (stdout and stderr, every incarnation
appended). It starts a node and waits until the spec's health check, a real request to the
server, succeeds; it kills (``SIGKILL``), pauses (``SIGSTOP``), resumes (``SIGCONT``),
restarts on the same data directory, and wipes a node's data directory.

Cleanup is not optional: the cluster is a context manager, and a ``weakref.finalize`` kills
every process it started even when a test forgets to close it or the interpreter exits.
``failure_notes()`` wraps a block of test code and attaches each node's log tail (and any
extra context, such as a nemesis seed) to an exception that escapes it.

Nodes and their peers: a spec's ``argv`` receives the node and, for every other node, the
address this node should dial for each of that peer's port roles. By default that is the
peer's real port; a ``blocks.testing.nemesis.Network`` replaces it with the port of a proxy
for that one link, which is how network faults reach a single link.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from blocks.core.errors import InvalidArgument
from blocks.testing.ports import free_ports

__all__ = [
    "HEALTH_TIMEOUT_S",
    "LOG_TAIL_BYTES",
    "ClusterError",
    "NodeInfo",
    "NodeProcess",
    "NodeState",
    "PeerAddresses",
    "ProcessCluster",
    "ServerSpec",
    "blocks_argv",
    "free_ports",
]

HEALTH_TIMEOUT_S = 60.0  # generous: the test machine may be loaded
HEALTH_POLL_S = 0.1
STOP_TIMEOUT_S = 15.0
LOG_TAIL_BYTES = 4000
NODES_MAX = 32

# peer name -> port role -> "host:port" that this node dials for it
PeerAddresses = Mapping[str, Mapping[str, str]]


class ClusterError(Exception):
    """A node did not start, did not become healthy, or a command does not fit its state."""


def blocks_argv(*arguments: str) -> list[str]:
    """``python -m blocks ARGUMENTS`` with the running interpreter."""
    return [sys.executable, "-m", "blocks", *arguments]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Where one node lives: its ports by role (e.g. ``listen``, ``cluster``), data and log."""

    name: str
    host: str
    ports: Mapping[str, int]
    data_dir: Path
    log_path: Path
    token: str

    def address(self, role: str = "listen") -> str:
        """``host:port`` of the port with ``role``; ``KeyError`` names the roles it has."""
        return f"{self.host}:{self.ports[role]}"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """How to run one kind of server.

    ``argv(node, peers)`` is the whole command line (``peers`` as ``PeerAddresses``;
    ``blocks_argv`` starts it with this interpreter's ``-m blocks``);
    ``health(node)`` makes a real request and raises any exception while the node cannot
    serve it; ``port_roles`` names the ports each node needs (the first is the one clients
    use); ``env`` is added to the environment of every node.
    """

    block: str
    port_roles: tuple[str, ...]
    argv: Callable[[NodeInfo, PeerAddresses], list[str]]
    health: Callable[[NodeInfo], object]
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.port_roles:
            raise InvalidArgument("a server needs at least one port role")


class NodeState(enum.Enum):
    STOPPED = "stopped"  # never started, or exited/killed and reaped
    RUNNING = "running"
    PAUSED = "paused"  # SIGSTOP: alive, holds its sockets, answers nothing


class NodeProcess:
    """One node's process across incarnations (start, kill, restart on the same data)."""

    def __init__(self, info: NodeInfo) -> None:
        self.info = info
        self.process: subprocess.Popen[bytes] | None = None
        self.state = NodeState.STOPPED
        self.incarnation = 0
        self._log: TextIO | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def launch(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start a new incarnation; ``ClusterError`` unless the node is stopped."""
        self._require(NodeState.STOPPED, "start")
        self.info.data_dir.mkdir(parents=True, exist_ok=True)
        self.incarnation += 1
        self._log = self.info.log_path.open("a", encoding="utf-8")
        self._log.write(f"--- incarnation {self.incarnation}: {' '.join(argv)}\n")
        self._log.flush()
        self.process = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
        self.state = NodeState.RUNNING

    def kill(self) -> None:
        """``kill -9``; a paused node dies as well. No-op when stopped."""
        if self.process is not None and self.state is not NodeState.STOPPED:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
        self._reaped()

    def terminate(self) -> None:
        """SIGTERM (after SIGCONT if paused), then SIGKILL if it has not exited in time."""
        if self.process is not None and self.state is not NodeState.STOPPED:
            with contextlib.suppress(ProcessLookupError):
                if self.state is NodeState.PAUSED:
                    self.process.send_signal(signal.SIGCONT)
                self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        self._reaped()

    def pause(self) -> None:
        self._require(NodeState.RUNNING, "pause")
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.state = NodeState.PAUSED

    def resume(self) -> None:
        self._require(NodeState.PAUSED, "resume")
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.state = NodeState.RUNNING

    def exited(self) -> int | None:
        """The exit code if the process has ended by itself, else None."""
        return None if self.process is None else self.process.poll()

    def log_tail(self, limit_bytes: int = LOG_TAIL_BYTES) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            with self.info.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - limit_bytes))
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _require(self, state: NodeState, verb: str) -> None:
        if self.state is not state:
            raise ClusterError(f"cannot {verb} {self.info.name}: it is {self.state.value}")

    def _reaped(self) -> None:
        self.state = NodeState.STOPPED
        if self._log is not None:
            self._log.close()
            self._log = None


def _kill_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """Finalizer: SIGCONT + SIGKILL every process that may still run (never raises)."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGCONT)
                process.kill()
    for process in processes:
        with contextlib.suppress(Exception):
            process.wait(timeout=STOP_TIMEOUT_S)


class ProcessCluster:
    """Nodes ``names`` of ``spec`` under ``root`` (a fresh temporary directory by default).

    Nothing starts until ``start_all()`` or ``start(name)``. Methods are synchronous and
    meant for one thread (call them through ``asyncio.to_thread`` from async tests).
    """

    def __init__(
        self,
        spec: ServerSpec,
        names: Sequence[str],
        root: Path | None = None,
        *,
        token: str = "kit-token",
        host: str = "127.0.0.1",
        health_timeout_s: float = HEALTH_TIMEOUT_S,
    ) -> None:
        if not names or len(names) > NODES_MAX or len(set(names)) != len(names):
            raise InvalidArgument(f"need 1..{NODES_MAX} distinct node names, got {names!r}")
        self.spec = spec
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix=f"blocks-{spec.block}-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.health_timeout_s = health_timeout_s
        ports = iter(free_ports(len(names) * len(spec.port_roles), host))
        self.nodes: dict[str, NodeProcess] = {}
        for name in names:
            info = NodeInfo(
                name=name,
                host=host,
                ports={role: next(ports) for role in spec.port_roles},
                data_dir=self.root / name / "data",
                log_path=self.root / name / "server.log",
                token=token,
            )
            info.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.nodes[name] = NodeProcess(info)
        # name -> peer -> role -> address this node dials (a proxy may stand in)
        self.dial: dict[str, dict[str, dict[str, str]]] = {
            name: {
                peer: {role: node.info.address(role) for role in spec.port_roles}
                for peer, node in self.nodes.items()
                if peer != name
            }
            for name in names
        }
        self.base_env: dict[str, dict[str, str]] = {name: {} for name in names}
        self.extra_env: dict[str, dict[str, str]] = {name: {} for name in names}
        self._popens: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _kill_all, self._popens)

    # -- lookup ----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    def info(self, name: str) -> NodeInfo:
        return self.nodes[name].info

    def address(self, name: str, role: str | None = None) -> str:
        """The address clients use (the first port role unless ``role`` is given)."""
        return self.info(name).address(role or self.spec.port_roles[0])

    def addresses(self, role: str | None = None) -> list[str]:
        return [self.address(name, role) for name in self.nodes]

    def running(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.state is NodeState.RUNNING]

    # -- lifecycle ---------------------------------------------------------------------------

    def start_all(self) -> None:
        """Start every stopped node, then wait until each is healthy."""
        for name, node in self.nodes.items():
            if node.state is NodeState.STOPPED:
                self._launch(name)
        for name in self.nodes:
            self.wait_healthy(name)

    def start(self, name: str, *, wait: bool = True) -> None:
        """Start ``name`` on its data directory (as it is: restart keeps it, wipe empties it)."""
        self._launch(name)
        if wait:
            self.wait_healthy(name)

    def restart(self, name: str, *, wait: bool = True) -> None:
        """``kill -9`` if it runs (or is paused), then start again on the same data."""
        self.nodes[name].kill()
        self.start(name, wait=wait)

    def kill(self, name: str) -> None:
        self.nodes[name].kill()

    def terminate(self, name: str) -> None:
        self.nodes[name].terminate()

    def pause(self, name: str) -> None:
        self.nodes[name].pause()

    def resume(self, name: str) -> None:
        self.nodes[name].resume()

    def wipe(self, name: str) -> None:
        """Delete the node's data directory; ``ClusterError`` unless the node is stopped."""
        node = self.nodes[name]
        if node.state is not NodeState.STOPPED:
            raise ClusterError(f"wipe {name}: stop it first (it is {node.state.value})")
        shutil.rmtree(node.info.data_dir, ignore_errors=True)

    def set_env(self, name: str, env: Mapping[str, str]) -> None:
        """Extra environment for ``name``'s next start (e.g. a clock offset); replaces the
        previous ``set_env`` of that node."""
        self.extra_env[name] = dict(env)

    def add_base_env(self, name: str, env: Mapping[str, str]) -> None:
        """Environment for every later start of ``name`` (e.g. a fault hook); ``set_env``
        does not remove it and wins on a clash."""
        self.base_env[name].update(env)

    def wait_healthy(self, name: str, timeout_s: float | None = None) -> None:
        """Until the spec's health request succeeds; ``ClusterError`` with the log if not."""
        node = self.nodes[name]
        deadline = time.monotonic() + (timeout_s or self.health_timeout_s)
        last: BaseException | None = None
        while time.monotonic() < deadline:
            code = node.exited()
            if code is not None:
                node.kill()
                raise ClusterError(f"{name} exited with {code}:\n{node.log_tail()}")
            try:
                self.spec.health(node.info)
                return
            except Exception as error:  # any failure means "not yet"
                last = error
            time.sleep(HEALTH_POLL_S)
        raise ClusterError(f"{name} not healthy in time ({last!r}):\n{node.log_tail()}")

    def close(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL); idempotent. Logs stay under ``root``."""
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.terminate()
        self._finalizer()

    def remove(self) -> None:
        """``close()``, then delete ``root`` if this cluster made it."""
        self.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    # -- failure context -------------------------------------------------------------------

    def logs(self, limit_bytes: int = LOG_TAIL_BYTES) -> str:
        """Each node's log tail, headed by its name and state."""
        parts = []
        for name, node in self.nodes.items():
            head = f"===== {name} ({node.state.value}, pid {node.pid}, {node.info.log_path})"
            parts.append(f"{head}\n{node.log_tail(limit_bytes)}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def failure_notes(self, *context: str) -> Iterator[None]:
        """Attach ``context`` lines and every node's log tail to an exception raised inside."""
        try:
            yield
        except BaseException as error:
            for line in context:
                error.add_note(line)
            error.add_note(self.logs())
            raise

    # -- internals ---------------------------------------------------------------------------

    def _launch(self, name: str) -> None:
        node = self.nodes[name]
        argv = self.spec.argv(node.info, self.dial[name])
        node.launch(argv, {**self.spec.env, **self.base_env[name], **self.extra_env[name]})
        assert node.process is not None
        self._popens.append(node.process)
