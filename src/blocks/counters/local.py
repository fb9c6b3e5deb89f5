"""Single-process counters: ``LocalCounters`` (one int per name) and ``ShardedCounters``.

``ShardedCounters`` spreads each counter over ``shards`` cells and picks a cell per increment
with an injected ``random.Random``; reads sum the cells. In one Python process this only
illustrates the pattern; its point is when each cell is a separate key in a store (kv, Redis)
where one hot key would serialize every writer. ``resize(k)`` changes the shard count while
running: growing adds zero cells, shrinking folds the removed cells into the remaining ones,
so the sum (the value) never changes.
"""

from __future__ import annotations

import random

from blocks.core.errors import InvalidArgument, Overloaded
from blocks.counters.api import COUNTER_NAME_BYTES_MAX, COUNTERS_MAX

__all__ = ["SHARDS_MAX", "LocalCounters", "ShardedCounters", "check_amount", "check_name"]

SHARDS_MAX = 1024
AMOUNT_MAX = (1 << 62) - 1


def check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"counter name must be a non-empty str, got {name!r}")
    if len(name.encode()) > COUNTER_NAME_BYTES_MAX:
        raise InvalidArgument(f"counter name longer than {COUNTER_NAME_BYTES_MAX} bytes")


def check_amount(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or abs(amount) > AMOUNT_MAX:
        raise InvalidArgument(f"amount must be an int of magnitude < 2**62, got {amount!r}")


class LocalCounters:
    """Exact counters in a dict."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def increment(self, name: str, amount: int = 1) -> int:
        check_name(name)
        check_amount(amount)
        if name not in self._values and len(self._values) >= COUNTERS_MAX:
            raise Overloaded(f"at most {COUNTERS_MAX} counters")
        value = self._values.get(name, 0) + amount
        self._values[name] = value
        return value

    def value(self, name: str) -> int:
        check_name(name)
        return self._values.get(name, 0)


class ShardedCounters:
    """Counters split over ``shards`` cells each; ``resize`` while running."""

    __slots__ = ("_cells", "_rng", "_shards")

    def __init__(self, shards: int = 8, *, rng: random.Random | None = None) -> None:
        self._check_shards(shards)
        self._shards = shards
        self._rng = rng or random.Random()
        self._cells: dict[str, list[int]] = {}

    @staticmethod
    def _check_shards(shards: int) -> None:
        if not isinstance(shards, int) or not 0 < shards <= SHARDS_MAX:
            raise InvalidArgument(f"shards must be in [1, {SHARDS_MAX}], got {shards!r}")

    @property
    def shards(self) -> int:
        return self._shards

    def increment(self, name: str, amount: int = 1) -> int:
        check_name(name)
        check_amount(amount)
        cells = self._cells.get(name)
        if cells is None:
            if len(self._cells) >= COUNTERS_MAX:
                raise Overloaded(f"at most {COUNTERS_MAX} counters")
            cells = self._cells[name] = [0] * self._shards
        cells[self._rng.randrange(self._shards)] += amount
        return sum(cells)

    def value(self, name: str) -> int:
        check_name(name)
        return sum(self._cells.get(name, ()))

    def shard_values(self, name: str) -> list[int]:
        check_name(name)
        return list(self._cells.get(name, [0] * self._shards))

    def resize(self, shards: int) -> None:
        """Change the shard count; every counter keeps its value."""
        self._check_shards(shards)
        for name, cells in self._cells.items():
            if shards >= len(cells):
                cells.extend([0] * (shards - len(cells)))
            else:
                kept = cells[:shards]
                for index, extra in enumerate(cells[shards:]):
                    kept[index % shards] += extra
                self._cells[name] = kept
        self._shards = shards
