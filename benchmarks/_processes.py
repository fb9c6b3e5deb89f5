"""Every process a benchmark starts is stopped: a registry of the servers benchmarks spawn.

Theory of operation. A contender's set-up may start servers and then fail before it hands
back the state its tear-down would need to stop them (a peer that crashes at start, a client
that cannot connect). So whoever starts a process registers it here (``track_process``; the
helpers in ``benchmarks.peers`` do it themselves), and the harness, around each contender's
life, takes a ``mark()`` before set-up and calls ``stop_since(mark)`` after tear-down, in a
``finally``: whatever that contender started and left running is stopped, even when set-up,
a round or tear-down raised. An ``atexit`` hook stops whatever is still registered when the
interpreter exits (an interrupted run). A process killed by SIGKILL takes its children along
only if they die with it; nothing here can help that.

Stopping is SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``.
"""

from __future__ import annotations

import atexit
import subprocess
import threading
from typing import Any

__all__ = [
    "STOP_TIMEOUT_S",
    "mark",
    "running",
    "stop_all",
    "stop_process",
    "stop_since",
    "track_process",
]

STOP_TIMEOUT_S = 10.0

_lock = threading.Lock()
# (registration number, process), in registration order; stopped ones are dropped.
_tracked: list[tuple[int, subprocess.Popen[Any]]] = []
_registered = 0


def track_process(process: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
    """Register ``process`` so that the harness (or exit) stops it; return it unchanged."""
    global _registered
    with _lock:
        _tracked.append((_registered, process))
        _registered += 1
    return process


def mark() -> int:
    """A point in the registration order: ``stop_since`` stops what was registered after it."""
    with _lock:
        return _registered


def stop_process(process: subprocess.Popen[Any], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; a no-op for a process that has exited."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)


def stop_since(since: int) -> list[subprocess.Popen[Any]]:
    """Stop every registered process from ``since`` on that still runs; return those stopped."""
    with _lock:
        chosen = [process for number, process in _tracked if number >= since]
        _tracked[:] = [(number, process) for number, process in _tracked if number < since]
    stopped = [process for process in chosen if process.poll() is None]
    for process in stopped:
        stop_process(process)
    return stopped


def running() -> list[subprocess.Popen[Any]]:
    """The registered processes that have not exited (for tests and diagnostics)."""
    with _lock:
        return [process for _, process in _tracked if process.poll() is None]


def stop_all() -> None:
    """Stop every registered process (the ``atexit`` hook)."""
    stop_since(0)


atexit.register(stop_all)
