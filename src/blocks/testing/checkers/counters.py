"""CRDT counter histories: replicas converge to the sum of the increments that happened.

``check_counter_convergence`` reads ``Operation``s of ``increment`` (key: the counter,
value: the amount, which may be negative for a PN-counter) and, per counter, the value each
replica reports after the faults have healed and gossip has run. It finds:

* **divergent**: replicas of one counter reporting different values;
* **wrong sums**: a converged value outside what the history allows: every acknowledged
  increment counted exactly once, plus any subset of those whose outcome is unknown
  (``info``). Failed increments must not count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from blocks.testing.checkers.operations import Operation
from blocks.testing.history import Verdict

__all__ = ["CounterCheck", "check_counter_convergence"]


@dataclass(frozen=True, slots=True)
class CounterCheck(Verdict):
    """The verdict per counter: the bounds allowed and what was found."""

    failures = ("divergent", "wrong_sums")
    bounds: tuple[tuple[Hashable, int, int], ...]  # (counter, lowest, highest) allowed
    divergent: tuple[tuple[Hashable, tuple[int, ...]], ...]
    wrong_sums: tuple[tuple[Hashable, int], ...]

    def describe(self) -> str:
        counts = self.failure_counts()
        return f"counters={len(self.bounds)} {counts}" + self.first_of("wrong_sums")


def check_counter_convergence(
    operations: Iterable[Operation],
    final: Mapping[Hashable, Sequence[int]],
    *,
    function: str = "increment",
) -> CounterCheck:
    """``final`` maps each counter to the values its replicas report at the end."""
    low: dict[Hashable, int] = defaultdict(int)
    high: dict[Hashable, int] = defaultdict(int)
    for op in operations:
        if op.function != function or op.status == "fail":
            continue
        amount = op.value
        assert isinstance(amount, int), f"an increment's value is an int, got {amount!r}"
        if op.status == "ok":
            low[op.key] += amount
            high[op.key] += amount
        elif amount < 0:
            low[op.key] += amount
        else:
            high[op.key] += amount
    bounds, divergent, wrong = [], [], []
    for counter, values in sorted(final.items(), key=lambda item: repr(item[0])):
        bounds.append((counter, low[counter], high[counter]))
        if len(set(values)) > 1:
            divergent.append((counter, tuple(values)))
        for value in sorted(set(values)):
            if not low[counter] <= value <= high[counter]:
                wrong.append((counter, value))
    return CounterCheck(tuple(bounds), tuple(divergent), tuple(wrong))
