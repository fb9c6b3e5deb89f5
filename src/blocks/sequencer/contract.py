"""A public Hypothesis contract for ID generators (``api.IdGenerator``).

Subclass ``SequencerContract``, implement ``make_generator(clock, sleep)`` and expose
``TestCase``::

    class TestMine(SequencerContract):
        def make_generator(self, clock, sleep):
            return MyGenerator(clock=clock, sleep=sleep)

    TestMine = TestMine.TestCase

The machine drives a ``ManualClock`` forwards, backwards by a little and by a lot, and checks
against the simplest model, the last ID issued: every ID is strictly greater than it. A
generator may refuse with ``Unavailable`` while the clock is far behind; once the clock is
back past everything it showed before, it must issue IDs again. ``sleep`` advances the manual
clock, so a generator that waits makes progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from blocks.core.clock import ManualClock
from blocks.core.errors import Unavailable
from blocks.sequencer.api import IdGenerator

__all__ = ["SequencerContract"]

START_MS = 1_700_000_000_000


class SequencerContract(RuleBasedStateMachine):
    """Checks strict monotonicity and recovery of any ``IdGenerator`` under clock jumps."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(wall_ms=START_MS)
        self.latest_wall_ms = START_MS
        self.issued: list[Any] = []
        self.refusals = 0

    def make_generator(
        self, clock: ManualClock, sleep: Callable[[float], None]
    ) -> IdGenerator[Any]:
        raise NotImplementedError("subclasses build the generator under test")

    def _sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._note_wall()

    def _note_wall(self) -> None:
        self.latest_wall_ms = max(self.latest_wall_ms, self.clock.now_ms())

    @initialize()
    def build(self) -> None:
        self.generator = self.make_generator(self.clock, self._sleep)

    def _record(self, ids: list[Any]) -> None:
        for value in ids:
            if self.issued:
                assert value > self.issued[-1], f"{value!r} is not above {self.issued[-1]!r}"
            self.issued.append(value)

    @rule()
    def next_id(self) -> None:
        try:
            self._record([self.generator.next_id()])
        except Unavailable:
            self.refusals += 1

    @rule(n=st.integers(min_value=0, max_value=40))
    def next_ids(self, n: int) -> None:
        try:
            ids = list(self.generator.next_ids(n))
        except Unavailable:
            self.refusals += 1
            return
        assert len(ids) == n
        self._record(ids)

    @rule(ms=st.integers(min_value=0, max_value=3))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms=ms)
        self._note_wall()

    @rule(ms=st.one_of(st.integers(1, 20), st.integers(1_000, 100_000)))
    def jump_backwards(self, ms: int) -> None:
        self.clock.jump_wall_ms(-ms)

    @rule(ms=st.integers(1, 100_000))
    def jump_forwards(self, ms: int) -> None:
        self.clock.jump_wall_ms(ms)
        self._note_wall()

    @rule()
    def recovers_after_clock_catches_up(self) -> None:
        self.clock.set_wall_ms(self.latest_wall_ms + 1)
        self._note_wall()
        self._record([self.generator.next_id()])

    @invariant()
    def strictly_increasing(self) -> None:
        if len(self.issued) >= 2:
            assert self.issued[-2] < self.issued[-1]
