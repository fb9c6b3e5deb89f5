"""A public Hypothesis contract for ``api.RateLimiter`` implementations.

Subclass ``RateLimiterContract`` (a ``blocks.testing.contract.Contract``), implement
``make_subject()`` (the limiter must take its time from ``self.clock``, a ``ManualClock``)
and ``check_promise(admissions)``, and expose ``TestCase``. ``make_limiter(clock)`` is a
deprecated alias of ``make_subject``. The machine drives the clock and a few keys with
random costs. The rules it enforces:

* the promise: ``check_promise`` gets each key's admitted ``(time_us, cost)`` list and
  asserts the algorithm's bound, after every step in which that key was admitted (it must
  depend on that list alone); ``rate_promise``, ``sliding_promise`` and
  ``aligned_window_promise`` below are the checkers for this package's algorithms;
* honesty: after a refusal, waiting exactly ``retry_after_ms`` (with no other request on that
  key) and asking again is admitted;
* liveness: a fresh key admits any cost up to ``capacity``;
* decision sanity: allowed decisions carry no wait, refused ones a positive wait, and
  ``remaining`` and ``reset_ms`` are never negative;
* keys are independent: each key's admissions are checked against the bound on their own.
"""

from __future__ import annotations

import bisect
import itertools

from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from blocks.core.clock import ManualClock
from blocks.ratelimit.api import Decision, RateLimiter
from blocks.testing.contract import Contract

__all__ = [
    "RateLimiterContract",
    "aligned_window_promise",
    "rate_promise",
    "sliding_promise",
]

Admissions = list[tuple[int, int]]
TOLERANCE = 1e-6


def rate_promise(admissions: Admissions, rate_per_s: float, burst: int) -> None:
    """Over every interval [t_i, t_j], admitted cost <= burst + rate * (t_j - t_i).

    In one pass: with P_k the cost admitted before the k-th admission, the bound for [i, j]
    is (P_(j+1) - rate * t_j) - (P_i - rate * t_i) <= burst, so each j is checked against the
    smallest P_i - rate * t_i of the i before it (times in order, as the contract's clock
    gives them)."""
    if not admissions:
        return
    rate_per_us = rate_per_s / 1_000_000
    before = 0  # P_j: cost admitted before the j-th admission
    lowest, lowest_at = 0.0, 0  # min over i <= j of P_i - rate * t_i, and that i
    origin = admissions[0][0]  # times from the first admission: small floats, exact enough
    for j, (at, cost) in enumerate(admissions):
        level = before - rate_per_us * (at - origin)
        if level < lowest or j == 0:
            lowest, lowest_at = level, j
        before += cost
        if before - rate_per_us * (at - origin) - lowest > burst + TOLERANCE:
            start = admissions[lowest_at]
            total = sum(c for _, c in admissions[lowest_at : j + 1])
            raise AssertionError((start, admissions[j], total))


def sliding_promise(admissions: Admissions, limit: int, window_ms: int) -> None:
    """In every interval (t - window, t], admitted cost <= limit (prefix sums over the
    admissions in time order, each window found by bisection)."""
    window_us = window_ms * 1000
    ordered = sorted(admissions)
    times = [at for at, _ in ordered]
    totals = [0, *itertools.accumulate(cost for _, cost in ordered)]
    for end in times:
        total = (
            totals[bisect.bisect_right(times, end)]
            - totals[bisect.bisect_right(times, end - window_us)]
        )
        assert total <= limit, (end, total)


def aligned_window_promise(admissions: Admissions, limit: int, window_ms: int) -> None:
    """In every aligned window [k*W, (k+1)*W), admitted cost <= limit."""
    totals: dict[int, int] = {}
    for at, cost in admissions:
        totals[at // (window_ms * 1000)] = totals.get(at // (window_ms * 1000), 0) + cost
    assert all(total <= limit for total in totals.values()), totals


class RateLimiterContract(Contract[RateLimiter]):
    """Checks a limiter's promise, honesty and liveness with a manual clock."""

    properties = ("promise", "honest retry_after", "liveness", "decision sanity")
    legacy_hooks = {"make_limiter": "make_subject"}

    keys = ("a", "b", "c")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(monotonic_s=1000.0)
        self.admissions: dict[str, Admissions] = {key: [] for key in self.keys}
        self.refused: dict[str, tuple[int, Decision]] = {}
        self.changed: set[str] = set()
        """Keys admitted to since ``promise_holds`` last ran."""
        self.fresh = 0

    def make_subject(self) -> RateLimiter:
        return self.make_limiter(self.clock)

    def make_limiter(self, clock: ManualClock) -> RateLimiter:
        """Deprecated alias of ``make_subject``."""
        raise NotImplementedError(f"{type(self).__name__} must override make_subject()")

    def check_promise(self, admissions: Admissions) -> None:
        raise NotImplementedError("subclasses check their algorithm's bound")

    @initialize()
    def build(self) -> None:
        self.limiter = self.open_subject()

    def teardown(self) -> None:
        self.finish_subject(getattr(self, "limiter", None))

    def _now_us(self) -> int:
        return round(self.clock.monotonic() * 1_000_000)

    def _acquire(self, key: str, cost: int) -> Decision:
        decision = self.limiter.acquire(key, cost)
        assert decision.remaining >= 0 and decision.reset_ms >= 0
        if decision.allowed:
            assert decision.retry_after_ms == 0
            self.admissions.setdefault(key, []).append((self._now_us(), cost))
            self.changed.add(key)
            self.refused.pop(key, None)
        else:
            assert decision.retry_after_ms > 0
            self.refused[key] = (cost, decision)
        return decision

    @rule(key=st.sampled_from(keys), cost=st.integers(1, 4), data=st.data())
    def acquire(self, key: str, cost: int, data: st.DataObject) -> None:
        if data.draw(st.booleans()):
            cost = data.draw(st.integers(1, self.limiter.capacity))
        self._acquire(key, cost)

    @rule(key=st.sampled_from(keys), times=st.integers(1, 20))
    def burst(self, key: str, times: int) -> None:
        for _ in range(times):
            self._acquire(key, 1)

    @rule(ms=st.one_of(st.integers(0, 30), st.integers(0, 3000)))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms=ms)

    def _has_refused(self) -> bool:
        return bool(self.refused)

    # A named function, not a lambda: Hypothesis describes a lambda precondition by parsing its
    # source, and did so on every run (about 7% of a contract's time).
    @precondition(_has_refused)
    @rule(data=st.data())
    def retry_after_is_honest(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.refused)))
        cost, decision = self.refused[key]
        self.clock.advance(ms=decision.retry_after_ms)
        again = self._acquire(key, cost)
        assert again.allowed, f"refused again after waiting {decision.retry_after_ms} ms: {again}"

    @rule(data=st.data())
    def fresh_key_admits_up_to_capacity(self, data: st.DataObject) -> None:
        self.fresh += 1
        cost = data.draw(st.integers(1, self.limiter.capacity))
        assert self._acquire(f"fresh-{self.fresh}", cost).allowed

    @invariant()
    def promise_holds(self) -> None:
        # ``check_promise`` judges one key's admissions alone, so a key whose list has not
        # grown since it last passed passes again: only the keys admitted to since are checked
        # (every key's, fresh ones included, had been checked after every step before).
        for key in self.changed:
            self.check_promise(self.admissions[key])
        self.changed.clear()
