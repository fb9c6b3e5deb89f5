"""A ticket server: durable, strictly increasing blocks of integer IDs handed to clients.

Theory of operation
-------------------
The server owns one counter. ``allocate(count)`` returns the next ``count`` integers as a
``range``. Durability follows the Flickr ticket-server idea with a reservation ahead:
before handing out any number below ``reserved_until`` the server has persisted
``reserved_until``; when a request would cross it, the core asks for a new reservation
(``reserve_ahead`` numbers past the request) to be written *first*. After a crash the server
restarts at the persisted reservation, so numbers are never reused; at most
``reserve_ahead`` numbers are skipped per crash.

``TicketCore`` is the pure state machine (it says what to persist); ``TicketServer`` adds the
file (``blocks.sequencer.statefile``). ``TicketClient`` is the client side: it takes blocks of
``block_size`` from any allocate function and serves ``next_id``/``next_ids`` from memory, so
one round trip buys ``block_size`` IDs.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from blocks.core.errors import InvalidArgument, Unavailable
from blocks.sequencer.statefile import read_state, write_state

__all__ = ["BLOCK_SIZE_MAX", "TicketClient", "TicketCore", "TicketServer"]

BLOCK_SIZE_MAX = 1 << 24
ID_MAX = (1 << 63) - 1
_STATE = struct.Struct(">Q")


class TicketCore:
    """Pure allocator state: next number to hand out and the persisted reservation."""

    __slots__ = ("_next", "_reserve_ahead", "_reserved_until")

    def __init__(self, reserved_until: int = 1, *, reserve_ahead: int = 10_000) -> None:
        if reserved_until < 1 or not 0 < reserve_ahead <= BLOCK_SIZE_MAX:
            raise InvalidArgument("reserved_until must be >= 1 and reserve_ahead in (0, 2**24]")
        self._next = reserved_until
        self._reserved_until = reserved_until
        self._reserve_ahead = reserve_ahead

    @property
    def reserved_until(self) -> int:
        return self._reserved_until

    def reservation_needed(self, count: int) -> int | None:
        """The reservation to persist before ``allocate(count)``, or None if none is needed."""
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= BLOCK_SIZE_MAX:
            raise InvalidArgument(f"count must be an int in [1, {BLOCK_SIZE_MAX}], got {count!r}")
        end = self._next + count
        if end > ID_MAX:
            raise Unavailable("ticket space exhausted")
        if end <= self._reserved_until:
            return None
        return min(end + self._reserve_ahead, ID_MAX)

    def reserved(self, reserved_until: int) -> None:
        """Record that ``reserved_until`` is now durable."""
        assert reserved_until >= self._reserved_until
        self._reserved_until = reserved_until

    def allocate(self, count: int) -> range:
        """Hand out ``count`` numbers; the caller persisted any needed reservation first."""
        needed = self.reservation_needed(count)
        if needed is not None:
            raise AssertionError("allocate() before persisting the reservation")
        start = self._next
        self._next += count
        return range(start, start + count)


class TicketServer:
    """A ``TicketCore`` persisted in ``directory/tickets.state``. Not thread-safe."""

    def __init__(self, directory: str, *, reserve_ahead: int = 10_000, fsync: bool = True) -> None:
        os.makedirs(directory, exist_ok=True)
        self._path = os.path.join(directory, "tickets.state")
        self._fsync = fsync
        payload = read_state(self._path)
        start = 1
        if payload is not None:
            if len(payload) != _STATE.size:
                raise InvalidArgument(f"{self._path} is not a ticket state file")
            (start,) = _STATE.unpack(payload)
        self._core = TicketCore(start, reserve_ahead=reserve_ahead)

    def allocate(self, count: int) -> range:
        """The next ``count`` IDs, never handed out before, even across crashes."""
        needed = self._core.reservation_needed(count)
        if needed is not None:
            write_state(self._path, _STATE.pack(needed), fsync=self._fsync)
            self._core.reserved(needed)
        return self._core.allocate(count)


class TicketClient:
    """Serves IDs from blocks fetched with ``allocate(block_size)``; an ``IdGenerator``."""

    __slots__ = ("_allocate", "_block_size", "_current")

    def __init__(self, allocate: Callable[[int], range], *, block_size: int = 1000) -> None:
        if not 0 < block_size <= BLOCK_SIZE_MAX:
            raise InvalidArgument(f"block_size must be in (0, {BLOCK_SIZE_MAX}]")
        self._allocate = allocate
        self._block_size = block_size
        self._current = range(0)

    def next_id(self) -> int:
        if not self._current:
            self._current = self._allocate(self._block_size)
        value = self._current[0]
        self._current = self._current[1:]
        return value

    def next_ids(self, n: int) -> list[int]:
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= BLOCK_SIZE_MAX:
            raise InvalidArgument(f"n must be an int in [0, {BLOCK_SIZE_MAX}], got {n!r}")
        ids = list(self._current[:n])
        self._current = self._current[n:]
        while len(ids) < n:
            missing = n - len(ids)
            block = self._allocate(max(self._block_size, missing))
            ids.extend(block[:missing])
            self._current = block[missing:]
        return ids
