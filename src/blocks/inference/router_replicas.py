"""Engine replicas as child processes, for ``blocks inference serve --replicas N``.

Theory of operation: ``ReplicaSet.start`` runs N ``blocks inference serve`` processes on
127.0.0.1, each on a port of its own choosing, and reads each one's JSON start-up line to
learn it. A watcher per process restarts one that exits while the set is running, on the
same port (so the router's backend URL stays valid), at most ``max_restarts`` times in all;
meanwhile the router's health checks keep the dead replica out and bring it back once it
answers. ``stop`` sends SIGTERM to every child (each drains its own work), waits up to
``stop_timeout_s``, then kills what is left. On Linux a replica also gets SIGTERM when the
router process dies without stopping it (``kill -9``), so no engine outlives its router.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from blocks.core.errors import InvalidArgument, Unavailable

__all__ = ["ReplicaSet"]

log = logging.getLogger(__name__)

MAX_REPLICAS = 64
START_TIMEOUT_S = 600.0  # loading a large checkpoint on a busy machine takes minutes


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the router dies, even by ``kill -9``."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


class ReplicaSet:
    def __init__(
        self,
        num_replicas: int,
        serve_args: Sequence[str],
        *,
        max_restarts: int = 16,
        stop_timeout_s: float = 30.0,
    ) -> None:
        """``serve_args``: flags for each ``blocks inference serve`` (no ``--listen``)."""
        if not 1 <= num_replicas <= MAX_REPLICAS:
            raise InvalidArgument(f"--replicas must be in [1, {MAX_REPLICAS}]")
        self.num_replicas = num_replicas
        self.serve_args = list(serve_args)
        self.max_restarts = max_restarts
        self.stop_timeout_s = stop_timeout_s
        self.restarts = 0
        self.ports: list[int] = []
        self._procs: list[asyncio.subprocess.Process] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    async def start(self) -> list[str]:
        """Start every replica (concurrently); their base URLs once all listen."""
        try:
            started = await asyncio.gather(*(self._spawn(0) for _ in range(self.num_replicas)))
        except BaseException:
            await self.stop()
            raise
        for index, (proc, port) in enumerate(started):
            self._procs.append(proc)
            self.ports.append(port)
            self._watchers.append(asyncio.create_task(self._watch(index)))
        return self.urls

    async def _spawn(self, port: int) -> tuple[asyncio.subprocess.Process, int]:
        command = [sys.executable, "-m", "blocks", "inference", "serve", *self.serve_args]
        command += ["--listen", f"127.0.0.1:{port}", "--json"]
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the replicas' logs go where ours go
            start_new_session=True,  # Ctrl-C reaches the router only: it drains, then stops us
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
            bound = int(json.loads(line)["listen"].rpartition(":")[2])
        except (TimeoutError, ValueError, KeyError) as error:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise Unavailable(f"a replica did not start: {error!r}") from None
        return proc, bound

    async def _watch(self, index: int) -> None:
        while True:
            code = await self._procs[index].wait()
            if self._stopping:
                return
            if self.restarts >= self.max_restarts:
                log.error("replica %d exited (%s); no restarts left", index, code)
                return
            self.restarts += 1
            log.warning("replica %d exited (%s); restarting it", index, code)
            try:
                self._procs[index], _ = await self._spawn(self.ports[index])
            except Unavailable as error:
                log.error("replica %d did not restart: %s", index, error)
                return

    async def stop(self) -> None:
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self._procs:
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
