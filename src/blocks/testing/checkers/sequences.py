"""ID generator histories (sequencer): unique IDs, increasing per generator.

``check_unique_ids`` reads ``Operation``s of ``next`` (key: the generator, output: the ID it
returned) and finds:

* **duplicates**: one ID returned twice, by any generators (IDs are meant to be unique
  across the whole system, as Snowflake's and ticket servers' are);
* **decreases**: an ID from a generator that is not greater than an ID the same generator had
  returned *before this call was invoked* (calls that overlap in time may return in either
  order; real-time order is what a generator promises).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from blocks.testing.checkers.operations import Operation
from blocks.testing.history import Verdict

__all__ = ["IdCheck", "check_unique_ids"]


@dataclass(frozen=True, slots=True)
class IdCheck(Verdict):
    """The verdict; ``valid`` when no ID repeats and none goes backwards."""

    failures = ("duplicates", "decreases")
    ids: int
    duplicates: tuple[int, ...]
    decreases: tuple[Operation, ...]

    def describe(self) -> str:
        return f"ids={self.ids} {self.failure_counts()}"


def check_unique_ids(operations: Iterable[Operation], *, function: str = "next") -> IdCheck:
    """Check every acknowledged ``function`` call's output (an int ID)."""
    returned = [op for op in operations if op.function == function and op.status == "ok"]
    counts: dict[int, int] = defaultdict(int)
    for op in returned:
        counts[op.output] += 1  # type: ignore[index]
    duplicates = tuple(sorted(identifier for identifier, n in counts.items() if n > 1))
    by_generator: dict[Hashable, list[Operation]] = defaultdict(list)
    for op in returned:
        by_generator[op.key].append(op)
    decreases: list[Operation] = []
    for ops in by_generator.values():
        completed = sorted(ops, key=lambda op: op.complete_ns or 0)
        highest: int | None = None
        position = 0
        for op in sorted(ops, key=lambda op: op.invoke_ns):
            while (
                position < len(completed) and (completed[position].complete_ns or 0) < op.invoke_ns
            ):
                value = completed[position].output
                assert isinstance(value, int)
                highest = value if highest is None else max(highest, value)
                position += 1
            if highest is not None and op.output <= highest:  # type: ignore[operator]
                decreases.append(op)
    return IdCheck(len(returned), duplicates, tuple(sorted(decreases, key=lambda op: op.index)))
