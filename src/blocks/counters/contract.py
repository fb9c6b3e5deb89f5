"""A public Hypothesis contract for ``api.Counters`` implementations.

Subclass ``CountersContract`` (a ``blocks.testing.contract.Contract``), implement
``make_subject()`` (and ``settle()`` for implementations that converge over time, such as a
gossip cluster), and expose ``TestCase``. ``make_counters`` is a deprecated alias of
``make_subject``. The model is a plain dict of name to the sum of acknowledged increments.

Rules the model enforces:

* a counter never incremented reads 0; increments may be negative and any size up to
  ``10**12`` per call;
* after ``settle()`` every value read equals the sum of the increments acknowledged for that
  name, exactly (before every read, and as an invariant after every step);
* invalid names (empty, over the length limit, not a string) and amounts (not an int, or
  beyond 64 bits) raise ``InvalidArgument`` and change nothing.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, initialize, invariant, rule

from blocks.core.errors import InvalidArgument
from blocks.counters.api import Counters
from blocks.testing.contract import Contract

__all__ = ["CountersContract"]

names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=12)
amounts = st.one_of(st.integers(-5, 5), st.integers(-(10**12), 10**12))


class CountersContract(Contract[Counters]):
    """Checks a ``Counters`` implementation against a dict model."""

    properties = ("exact sums after settling", "bad input")
    legacy_hooks = {"make_counters": "make_subject"}

    counter_names = Bundle("counter_names")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, int] = {}

    def make_subject(self) -> Counters:
        return self.make_counters()

    def make_counters(self) -> Counters:
        """Deprecated alias of ``make_subject``."""
        raise NotImplementedError(f"{type(self).__name__} must override make_subject()")

    def settle(self) -> None:
        """Let an eventually consistent implementation converge (no-op by default)."""

    @initialize()
    def build(self) -> None:
        self.counters = self.open_subject()

    def teardown(self) -> None:
        self.finish_subject(getattr(self, "counters", None))

    @rule(target=counter_names, name=names)
    def new_name(self, name: str) -> str:
        return name

    @rule(name=counter_names, amount=amounts)
    def increment(self, name: str, amount: int) -> None:
        self.counters.increment(name, amount)
        self.model[name] = self.model.get(name, 0) + amount

    @rule(name=counter_names)
    def read(self, name: str) -> None:
        self.settle()
        assert self.counters.value(name) == self.model.get(name, 0)

    @rule(
        name=st.one_of(st.just(""), st.just("x" * 300), st.integers(), st.none()),
        amount=st.integers(-3, 3),
    )
    def bad_name_is_refused(self, name: object, amount: int) -> None:
        try:
            self.counters.increment(name, amount)  # type: ignore[arg-type]
        except InvalidArgument:
            return
        raise AssertionError(f"name {name!r} was accepted")

    @rule(name=counter_names, amount=st.one_of(st.just(1.5), st.just("3"), st.just(1 << 70)))
    def bad_amount_is_refused(self, name: str, amount: object) -> None:
        try:
            self.counters.increment(name, amount)  # type: ignore[arg-type]
        except InvalidArgument:
            return
        raise AssertionError(f"amount {amount!r} was accepted")

    @invariant()
    def all_values_match_after_settling(self) -> None:
        if not hasattr(self, "counters"):
            return
        self.settle()
        for name, expected in self.model.items():
            assert self.counters.value(name) == expected, name
