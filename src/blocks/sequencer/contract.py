"""A public Hypothesis contract for ID generators (``api.IdGenerator``).

Subclass ``SequencerContract`` (a ``blocks.testing.contract.Contract``), implement
``make_subject()`` and expose ``TestCase``::

    class TestMine(SequencerContract):
        def make_subject(self):
            return MyGenerator(clock=self.clock, sleep=self.sleep)

    TestMine = TestMine.TestCase

``make_generator(clock, sleep)`` is a deprecated alias of ``make_subject``. The machine drives
``self.clock`` (a ``ManualClock``) forwards, backwards by a little and by a lot, and checks
against the simplest model, the last ID issued. Rules it enforces:

* every ID, from ``next_id`` or within ``next_ids(n)``, is strictly greater than every ID
  issued before it, across clock jumps in both directions;
* ``next_ids(n)`` returns exactly ``n`` IDs (``n`` may be 0);
* a generator may refuse with ``Unavailable`` while the clock is behind what it showed
  before, and nothing else; once the clock is back past everything it showed, ``next_id``
  must succeed;
* ``self.sleep(seconds)`` advances the manual clock, so a generator that waits (for the next
  millisecond, or out a small backwards jump) makes progress instead of hanging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from blocks.core.clock import ManualClock
from blocks.core.errors import Unavailable
from blocks.sequencer.api import IdGenerator
from blocks.testing.contract import Contract

__all__ = ["SequencerContract"]

START_MS = 1_700_000_000_000


class SequencerContract(Contract[IdGenerator[Any]]):
    """Checks strict monotonicity and recovery of any ``IdGenerator`` under clock jumps."""

    properties = ("strictly increasing", "exact batch size", "recovery after clock jumps")
    legacy_hooks = {"make_generator": "make_subject"}

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(wall_ms=START_MS)
        self.latest_wall_ms = START_MS
        self.issued: list[Any] = []
        self.refusals = 0

    def make_subject(self) -> IdGenerator[Any]:
        return self.make_generator(self.clock, self.sleep)

    def make_generator(
        self, clock: ManualClock, sleep: Callable[[float], None]
    ) -> IdGenerator[Any]:
        """Deprecated alias of ``make_subject``."""
        raise NotImplementedError(f"{type(self).__name__} must override make_subject()")

    def sleep(self, seconds: float) -> None:
        """What a generator under test calls to wait: advances the manual clock."""
        self.clock.advance(seconds)
        self._note_wall()

    def _sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._note_wall()

    def _note_wall(self) -> None:
        self.latest_wall_ms = max(self.latest_wall_ms, self.clock.now_ms())

    @initialize()
    def build(self) -> None:
        self.generator = self.open_subject()

    def teardown(self) -> None:
        self.finish_subject(getattr(self, "generator", None))

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
