"""Admission control: budgets with honest retry-after, queue bounds, priorities, fairness."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.clock import ManualClock
from blocks.core.errors import Conflict, InvalidArgument, Overloaded
from blocks.inference.admission import AdmissionConfig, AdmissionController


def controller(**kw) -> tuple[AdmissionController, ManualClock]:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    return AdmissionController(AdmissionConfig(**kw), clock), clock


def test_token_budget_retry_after_is_honest() -> None:
    ctl, clock = controller(tokens_per_minute_per_key=600)  # 10 tokens per second
    ctl.submit("a", "k", 500)
    with pytest.raises(Overloaded) as info:
        ctl.submit("b", "k", 300)
    retry_ms = info.value.retry_after_ms
    assert retry_ms == 20_000  # 200 missing tokens at 10/s
    clock.advance(retry_ms / 1000 - 0.01)
    with pytest.raises(Overloaded):
        ctl.submit("b", "k", 300)
    clock.advance(0.02)
    ctl.submit("b", "k", 300)  # admitted right when promised
    ctl.submit("c", "other", 600)  # other keys have their own budget
    with pytest.raises(InvalidArgument):
        ctl.submit("d", "k", 601)  # can never fit
    assert ctl.queued == 3


def test_release_refunds_unused_tokens() -> None:
    ctl, _ = controller(tokens_per_minute_per_key=100)
    ctl.submit("a", "k", 100)
    with pytest.raises(Overloaded):
        ctl.submit("b", "k", 50)
    ctl.release("k", reserved_tokens=100, used_tokens=40)
    ctl.submit("b", "k", 50)


def test_queue_bound_and_expiry() -> None:
    ctl, clock = controller(max_queued_requests=2, max_queue_time_ms=1000)
    ctl.submit("a", "k", 1)
    clock.advance(0.5)
    ctl.submit("b", "k", 1)
    with pytest.raises(Overloaded) as info:
        ctl.submit("c", "k", 1)
    assert info.value.retry_after_ms >= 100
    with pytest.raises(Conflict):
        ctl.submit("a", "k", 1)
    clock.advance(0.6)
    assert [t.request_id for t in ctl.expire()] == ["a"]
    assert ctl.queued == 1
    assert ctl.remove("b") is not None and ctl.remove("b") is None
    assert ctl.pop_next() is None


def test_priorities_are_strict() -> None:
    ctl, _ = controller(num_priorities=3)
    ctl.submit("low", "k", 1, priority=2)
    ctl.submit("mid", "k", 1, priority=1)
    ctl.submit("high", "j", 1, priority=0)
    assert [ctl.pop_next().request_id for _ in range(3)] == ["high", "mid", "low"]  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument):
        ctl.submit("x", "k", 1, priority=3)


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 300)), min_size=1, max_size=120),
    st.integers(50, 400),
)
def test_deficit_round_robin_is_fair(requests: list[tuple[str, int]], quantum: int) -> None:
    ctl, _ = controller(max_queued_requests=1000, quantum_tokens=quantum)
    remaining = {key: 0 for key in "abc"}
    for index, (key, cost) in enumerate(requests):
        ctl.submit(f"r{index}", key, cost)
        remaining[key] += 1
    served = {key: 0 for key in "abc"}
    order_per_key: dict[str, list[int]] = {key: [] for key in "abc"}
    max_cost = max(cost for _, cost in requests)
    while (ticket := ctl.pop_next()) is not None:
        served[ticket.api_key] += ticket.cost_tokens
        remaining[ticket.api_key] -= 1
        order_per_key[ticket.api_key].append(int(ticket.request_id[1:]))
        backlogged = [k for k in "abc" if remaining[k] > 0]
        # While two keys both still have work, neither gets ahead by more than the bound.
        for first in backlogged:
            for second in backlogged:
                assert served[first] - served[second] <= quantum + max_cost
    assert all(v == 0 for v in remaining.values())
    assert all(order == sorted(order) for order in order_per_key.values())  # FIFO per key
