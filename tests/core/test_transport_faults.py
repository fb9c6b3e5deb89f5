"""The pure fault core of MemoryNetwork, driven without any event loop.

Random programs of submissions, cuts and deliveries run against ``NetworkFaults``; a model
written here from the documented rules checks every delivery and the counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument
from blocks.core.network_faults import Envelope, Kind, LinkConfig, NetworkFaults

NODES = ("a", "b", "c")

links = st.builds(
    LinkConfig,
    delay_ms=st.tuples(st.integers(0, 5), st.integers(0, 20)).map(lambda p: (p[0], p[0] + p[1])),
    loss=st.sampled_from([0.0, 0.0, 0.2, 1.0]),
    duplicate=st.sampled_from([0.0, 0.5]),
    reorder=st.sampled_from([0.0, 0.5]),
    reorder_delay_ms=st.sampled_from([0.0, 30.0]),
)

send = st.tuples(
    st.just("send"),
    st.sampled_from(NODES),
    st.sampled_from(NODES),
    st.sampled_from([True, True, True, False]),  # sender_up
)
steps = st.lists(
    st.one_of(
        send,
        send,
        send,
        st.tuples(st.just("wait"), st.integers(0, 30)),
        st.tuples(st.just("block"), st.sampled_from(NODES), st.sampled_from(NODES)),
        st.tuples(st.just("partition"), st.sampled_from(NODES)),
        st.tuples(st.just("heal")),
    ),
    min_size=5,
    max_size=60,
)


@dataclass
class Run:
    """What one program did: every delivery with its time, and the core it ran on."""

    faults: NetworkFaults
    deliveries: list[tuple[float, Envelope]] = field(default_factory=list)
    sent: dict[int, tuple[float, Envelope]] = field(default_factory=dict)
    cut_at_delivery: int = 0


def _run(seed: int, config: LinkConfig, program: list[tuple[object, ...]]) -> Run:
    run = Run(NetworkFaults(seed, default_link=config, in_flight_max=25, trace_max=50))
    now_ms = 0
    for step in program:
        if step[0] == "send":
            _, src, dst, sender_up = step
            envelope = Envelope(len(run.sent) + 1, Kind.ONEWAY, str(src), str(dst), 0, 0, b"m")
            run.sent[envelope.message_id] = (now_ms / 1000, envelope)
            run.faults.submit(envelope, now_ms / 1000, sender_up=bool(sender_up))
        elif step[0] == "wait":
            assert isinstance(step[1], int)
            now_ms += step[1]
            _deliver_due(run, now_ms / 1000)
        elif step[0] == "block":
            run.faults.block(str(step[1]), str(step[2]), now_ms / 1000)
        elif step[0] == "partition":
            run.faults.partition([[str(step[1])]], now_ms / 1000)
        else:
            run.faults.heal(now_ms / 1000)
    _deliver_due(run, float("inf"))
    return run


def _deliver_due(run: Run, until_s: float) -> None:
    while (envelope := run.faults.pop_due(until_s)) is not None:
        now_s = until_s if until_s != float("inf") else 1e9
        if run.faults.admit(envelope, now_s, sender_alive=True, receiver_up=True):
            run.faults.count("delivered", "deliver", envelope, now_s)
            run.deliveries.append((now_s, envelope))
        else:
            run.cut_at_delivery += 1


@given(seed=st.integers(0, 2**32), config=links, program=steps)
def test_core_follows_its_rules(
    seed: int, config: LinkConfig, program: list[tuple[object, ...]]
) -> None:
    run = _run(seed, config, program)
    stats = run.faults.stats()
    assert run.faults.in_flight == 0
    # Balance: every envelope handed over, and every duplicate, ended exactly one way.
    dropped = stats.dropped_loss + stats.dropped_partition + stats.dropped_crash
    assert stats.sent == len(run.sent)
    assert stats.delivered + dropped + stats.dropped_overload == stats.sent + stats.duplicated
    assert stats.delivered == len(run.deliveries)
    # Every delivery was sent, never early, and at most twice (original plus one duplicate).
    seen: dict[int, int] = {}
    for delivered_at, envelope in run.deliveries:
        sent_at, original = run.sent[envelope.message_id]
        assert envelope is original
        low_ms, _ = config.delay_ms
        assert delivered_at >= sent_at + low_ms / 1000 - 1e-9
        seen[envelope.message_id] = seen.get(envelope.message_id, 0) + 1
    assert all(count <= 2 for count in seen.values())
    if config.duplicate == 0:
        assert all(count == 1 for count in seen.values())
    if config.loss == 1.0:
        assert stats.delivered == 0
    # Without reordering or duplicates, each link delivers in the order it was sent.
    if config.reorder == 0 and config.duplicate == 0:
        for src in NODES:
            for dst in NODES:
                ids = [e.message_id for _, e in run.deliveries if (e.src, e.dst) == (src, dst)]
                assert ids == sorted(ids)


@given(seed=st.integers(0, 2**32), config=links, program=steps)
def test_core_is_a_function_of_its_seed(
    seed: int, config: LinkConfig, program: list[tuple[object, ...]]
) -> None:
    first, second = _run(seed, config, program), _run(seed, config, program)
    assert first.faults.trace() == second.faults.trace()
    assert first.faults.stats() == second.faults.stats()
    assert len(first.faults.trace()) <= 50  # trace_max holds


@given(
    seed=st.integers(0, 2**32),
    spread_ms=st.integers(1, 50),
    sends=st.lists(st.tuples(st.sampled_from(["a", "c"]), st.integers(0, 5)), max_size=40),
)
def test_links_without_reordering_are_fifo(
    seed: int, spread_ms: int, sends: list[tuple[str, int]]
) -> None:
    faults = NetworkFaults(seed, default_link=LinkConfig(delay_ms=(0, spread_ms)))
    now_ms = 0
    for message_id, (src, gap_ms) in enumerate(sends, start=1):
        now_ms += gap_ms
        envelope = Envelope(message_id, Kind.ONEWAY, src, "b", 0, 0, b"")
        assert faults.submit(envelope, now_ms / 1000, sender_up=True)
    order: list[Envelope] = []
    while (envelope := faults.pop_due(float("inf"))) is not None:
        order.append(envelope)
    assert sorted(e.message_id for e in order) == list(range(1, len(sends) + 1))
    for src in ("a", "c"):
        ids = [e.message_id for e in order if e.src == src]
        assert ids == sorted(ids)


def test_cuts_drop_at_send_and_in_flight() -> None:
    faults = NetworkFaults(1, default_link=LinkConfig(delay_ms=(10, 10)))
    early = Envelope(1, Kind.REQUEST, "a", "b", 0, 1, b"x")
    assert faults.submit(early, 0.0, sender_up=True)
    faults.partition([["a"], ["b"]], 0.001)
    assert faults.is_cut("a", "b") and faults.is_cut("b", "a")
    late = Envelope(2, Kind.REQUEST, "a", "b", 0, 2, b"x")
    assert not faults.submit(late, 0.002, sender_up=True)
    assert faults.pop_due(0.005) is None  # not due yet
    due = faults.pop_due(0.010)
    assert due is early
    assert not faults.admit(due, 0.010, sender_alive=True, receiver_up=True)
    assert faults.stats().dropped_partition == 2
    assert [event.reason for event in faults.trace() if event.action == "drop"] == [
        "link cut",
        "link cut in flight",
    ]
    faults.heal(0.02)
    faults.block("b", "a", 0.02)
    assert faults.is_cut("b", "a") and not faults.is_cut("a", "b")


@pytest.mark.parametrize(
    "options",
    [{"in_flight_max": 0}, {"trace_max": -1}],
)
def test_core_bounds_must_be_positive(options: dict[str, int]) -> None:
    with pytest.raises(InvalidArgument):
        NetworkFaults(0, **options)
