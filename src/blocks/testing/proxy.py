"""A small TCP proxy per network link, to delay, drop or cut traffic between two processes.

``LinkProxy`` listens on a port of its own and forwards every connection to one target.
The node that should dial the target through it is given the proxy's address instead of
the target's (``ProcessCluster.dial``), so a fault on the proxy hits that one link and
nothing else. Bytes from the dialer to the target flow *up*; replies flow *down*.

Faults, each per direction:

* ``delay(seconds)``: every chunk waits that long before it is forwarded (order kept).
* ``drop()``: bytes are read and thrown away, as a partition does; the connection is marked
  broken, and is closed when the link heals, because a stream with a hole in it cannot be
  resumed (TCP would have reset it too).
* ``cut()``: both directions; open connections are closed and new ones are closed at once.
* ``heal()``: back to forwarding everything.

The proxy runs an asyncio loop in a daemon thread (``blocks.core.loop_thread.LoopThread``);
the control methods are thread-safe and take effect for the next chunk. Connections are
bounded (``CONNECTIONS_MAX``); one over the limit is closed at once and counted in
``refused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from dataclasses import dataclass, field

from blocks.core.errors import InvalidArgument
from blocks.core.loop_thread import LoopThread

__all__ = ["CHUNK_BYTES", "CONNECTIONS_MAX", "Direction", "LinkProxy"]

CHUNK_BYTES = 64 * 1024
CONNECTIONS_MAX = 256
START_TIMEOUT_S = 10.0


class Direction(enum.Enum):
    UP = "up"  # dialer -> target
    DOWN = "down"  # target -> dialer
    BOTH = "both"

    def covers(self, other: Direction) -> bool:
        return self is Direction.BOTH or self is other


@dataclass(slots=True)
class _Fault:
    delay_s: float = 0.0
    dropping: bool = False


@dataclass(slots=True, eq=False)  # identity: kept in a set
class _Connection:
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    broken: bool = False


class LinkProxy:
    """Forwards connections on ``host:port`` (picked when 0) to ``target`` (``host:port``)."""

    def __init__(self, target: str, host: str = "127.0.0.1", port: int = 0) -> None:
        target_host, _, target_port = target.rpartition(":")
        if not target_host or not target_port.isdigit():
            raise InvalidArgument(f"target must be HOST:PORT, got {target!r}")
        self.target = (target_host, int(target_port))
        self.host = host
        self.port = port
        self._faults = {Direction.UP: _Fault(), Direction.DOWN: _Fault()}
        self._cut = False
        self._connections: set[_Connection] = set()  # guarded by the loop thread
        self._tasks: set[asyncio.Task[None]] = set()  # connection handlers, loop thread
        self.accepted = 0
        self.refused = 0
        self.bytes_dropped = 0
        self._server: asyncio.Server | None = None
        self._runner = LoopThread("blocks-link-proxy")
        self._runner.call(self._listen(), START_TIMEOUT_S)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- faults (any thread) -------------------------------------------------------------------

    def delay(self, seconds: float, direction: Direction = Direction.BOTH) -> None:
        if seconds < 0:
            raise InvalidArgument("delay must be >= 0")
        for side, fault in self._faults.items():
            if direction.covers(side):
                fault.delay_s = seconds

    def drop(self, direction: Direction = Direction.BOTH) -> None:
        for side, fault in self._faults.items():
            if direction.covers(side):
                fault.dropping = True

    def cut(self) -> None:
        """Close every open connection and refuse new ones until ``heal()``."""
        self._cut = True
        self._call(self._close_all, False)

    def heal(self) -> None:
        """Forward everything again; connections that lost bytes are closed."""
        self._cut = False
        for fault in self._faults.values():
            fault.delay_s = 0.0
            fault.dropping = False
        self._call(self._close_all, True)

    def close(self) -> None:
        """Stop listening, close every connection, stop the thread; idempotent."""
        if not self._runner.running:
            return
        with contextlib.suppress(Exception):
            self._runner.call(self._shutdown(), START_TIMEOUT_S)
        self._runner.stop()

    def __enter__(self) -> LinkProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- loop thread -------------------------------------------------------------------------

    def _call(self, function: object, *args: object) -> None:
        if self._runner.running:
            self._runner.call(self._run(function, *args), START_TIMEOUT_S)

    @staticmethod
    async def _run(function: object, *args: object) -> None:
        assert callable(function)
        function(*args)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._close_all(False)
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=START_TIMEOUT_S)

    def _close_all(self, only_broken: bool) -> None:
        for connection in list(self._connections):
            if connection.broken or not only_broken:
                for writer in connection.writers:
                    writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._cut or len(self._connections) >= CONNECTIONS_MAX:
            self.refused += 1
            writer.close()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            writer.close()
            return
        self.accepted += 1
        connection = _Connection([writer, target_writer])
        self._connections.add(connection)
        try:
            await asyncio.gather(
                self._pump(reader, target_writer, Direction.UP, connection),
                self._pump(target_reader, writer, Direction.DOWN, connection),
            )
        finally:
            self._connections.discard(connection)
            for each in connection.writers:
                each.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
        connection: _Connection,
    ) -> None:
        fault = self._faults[direction]
        try:
            while chunk := await reader.read(CHUNK_BYTES):
                if fault.delay_s > 0:
                    await asyncio.sleep(fault.delay_s)
                if fault.dropping or self._cut:
                    connection.broken = True
                    self.bytes_dropped += len(chunk)
                    continue
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for each in connection.writers:
                each.close()
