"""``LeaderWatch.next_check_ms`` is exactly the first time one of the leader's checks acts:
before it none does, at it one does (Hypothesis over follower histories). A driver that
arms only that time misses no check and wakes for nothing."""

from __future__ import annotations

import copy

from hypothesis import example, given, settings
from hypothesis import strategies as st

from blocks.pubsub.leader_watch import LeaderWatch
from blocks.pubsub.replica import ReplicaConfig

NODES = ("a", "b", "c")
CONFIG = ReplicaConfig("a", NODES, election_timeout_ms=40, lag_max_ms=30, announce_interval_ms=20)
FOLLOWERS = CONFIG.others
# Times near now_ms (100), so that every check's due time competes for the earliest.
times = st.none() | st.integers(55, 100)


def acts(watch: LeaderWatch, isr: set[str], now_ms: int) -> bool:
    """Whether any check would do something at ``now_ms`` (on a copy: announce notes)."""
    probe = copy.deepcopy(watch)
    return bool(
        probe.lagging(CONFIG, isr, now_ms)
        or probe.lost_majority(CONFIG, now_ms)
        or probe.announce(CONFIG, now_ms)
    )


@settings(max_examples=500, deadline=None)
@given(
    since_ms=st.integers(0, 100),
    fetched=st.lists(times, min_size=2, max_size=2),
    caught_up=st.lists(times, min_size=2, max_size=2),
    announced=st.lists(times, min_size=2, max_size=2),
    in_isr=st.lists(st.booleans(), min_size=2, max_size=2),
)
# Stepping down first: two timeouts of leading end at 101, after the followers went unheard.
@example(
    since_ms=20, fetched=[55, 55], caught_up=[None, None], announced=[90, 90], in_isr=[False, False]
)
def test_the_next_check_is_the_first_time_a_check_acts(
    since_ms: int,
    fetched: list[int | None],
    caught_up: list[int | None],
    announced: list[int | None],
    in_isr: list[bool],
) -> None:
    watch = LeaderWatch(since_ms)
    for follower, fetch, caught, sent in zip(FOLLOWERS, fetched, caught_up, announced, strict=True):
        if fetch is not None:
            watch.last_fetch_ms[follower] = fetch
        if caught is not None:
            watch.caught_up_ms[follower] = caught
        if sent is not None:
            watch.announced_ms[follower] = sent
    isr = {"a"} | {f for f, member in zip(FOLLOWERS, in_isr, strict=True) if member}
    now_ms = 100  # every recorded time is in the past
    due_ms = watch.next_check_ms(CONFIG, isr, now_ms)
    assert due_ms > now_ms
    # Nothing acts before it, and something acts at it (a check, once it would act, goes on
    # acting as time passes, so a check already due now acts at the floor of now_ms + 1).
    assert not any(acts(watch, isr, t) for t in range(now_ms + 1, due_ms))
    assert acts(watch, isr, due_ms)
