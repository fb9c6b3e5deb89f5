from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, Unavailable
from blocks.sequencer.snowflake import DEFAULT_EPOCH_MS, IDS_PER_CALL_MAX, Layout, Snowflake, decode

START_MS = 1_700_000_000_000


def make(clock: ManualClock, **kwargs: object) -> Snowflake:
    return Snowflake(5, clock=clock, sleep=clock.advance, **kwargs)  # type: ignore[arg-type]


def test_fields_decode_back() -> None:
    clock = ManualClock(wall_ms=START_MS)
    generator = make(clock)
    first, second = generator.next_ids(2)
    assert second == first + 1
    fields = generator.decode(first)
    assert (fields.unix_ms, fields.worker_id, fields.sequence) == (START_MS, 5, 0)
    assert decode(second).sequence == 1
    expected = ((START_MS - DEFAULT_EPOCH_MS) << 22) | (5 << 12)
    assert first == expected


@given(
    offset_ms=st.integers(0, (1 << 41) - 1),
    worker=st.integers(0, 1023),
    sequence=st.integers(0, 4095),
)
def test_decode_inverts_packing(offset_ms: int, worker: int, sequence: int) -> None:
    value = (offset_ms << 22) | (worker << 12) | sequence
    fields = decode(value)
    assert fields.unix_ms - DEFAULT_EPOCH_MS == offset_ms
    assert (fields.worker_id, fields.sequence) == (worker, sequence)


@given(
    steps=st.lists(st.tuples(st.integers(-60, 5), st.integers(1, 3000)), min_size=1, max_size=30)
)
def test_jumping_clock_never_repeats_or_goes_down(steps: list[tuple[int, int]]) -> None:
    clock = ManualClock(wall_ms=START_MS)
    generator = make(clock, backwards_wait_max_ms=50)
    issued: list[int] = []
    for jump_ms, count in steps:
        clock.jump_wall_ms(jump_ms)
        try:
            issued.extend(generator.next_ids(count))
        except Unavailable:
            continue
    assert issued == sorted(set(issued))
    assert all(decode(value).worker_id == 5 for value in issued)


def test_exhaustion_waits_for_next_millisecond() -> None:
    clock = ManualClock(wall_ms=START_MS)
    generator = make(clock)
    ids = generator.next_ids(4096 * 3 + 1)
    assert clock.now_ms() == START_MS + 3
    assert [decode(ids[k]).unix_ms for k in (0, 4095, 4096, -1)] == [
        START_MS,
        START_MS,
        START_MS + 1,
        START_MS + 3,
    ]


def test_small_backwards_step_waits_large_raises_then_recovers() -> None:
    clock = ManualClock(wall_ms=START_MS)
    generator = make(clock, backwards_wait_max_ms=10)
    last = generator.next_id()
    clock.jump_wall_ms(-10)
    after_wait = generator.next_id()
    assert after_wait > last
    assert clock.now_ms() == START_MS  # it slept exactly until the clock caught up
    clock.jump_wall_ms(-500)
    with pytest.raises(Unavailable):
        generator.next_id()
    clock.jump_wall_ms(501)
    assert generator.next_id() > after_wait


def test_min_timestamp_starts_after_previous_holder() -> None:
    clock = ManualClock(wall_ms=START_MS)
    generator = make(clock, min_timestamp_ms=START_MS, backwards_wait_max_ms=5)
    value = generator.next_id()
    assert decode(value).unix_ms == START_MS + 1


def test_custom_layout_round_trips() -> None:
    layout = Layout(timestamp_bits=45, worker_bits=4, sequence_bits=14)
    clock = ManualClock(wall_ms=START_MS)
    generator = Snowflake(15, clock=clock, layout=layout, epoch_ms=0, sleep=clock.advance)
    fields = generator.decode(generator.next_ids(20_000)[-1])
    assert (fields.worker_id, fields.unix_ms, fields.sequence) == (
        15,
        START_MS + 1,
        20_000 - 16384 - 1,
    )


def test_lost_lease_stops_issuing() -> None:
    class Flag:
        ok = True

        def held(self) -> bool:
            return self.ok

    flag = Flag()
    clock = ManualClock(wall_ms=START_MS)
    generator = Snowflake(1, clock=clock, lease=flag)
    generator.next_id()
    flag.ok = False
    with pytest.raises(Unavailable):
        generator.next_id()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"worker_id": 1024},
        {"worker_id": -1},
        {"worker_id": 1, "epoch_ms": -5},
        {"worker_id": 1, "backwards_wait_max_ms": -1},
    ],
)
def test_bad_construction_is_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidArgument):
        Snowflake(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", [(41, 10, 13), (10, 10, 12), (41, 10, 0), (41, -1, 12)])
def test_bad_layouts_are_refused(bits: tuple[int, int, int]) -> None:
    with pytest.raises(InvalidArgument):
        Layout(*bits)


@pytest.mark.parametrize("bad", [-1, 1 << 63, "12", 1.5, True])
def test_decode_refuses_bad_ids(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        decode(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [-1, IDS_PER_CALL_MAX + 1, 2.0])
def test_next_ids_bounds(n: object) -> None:
    generator = Snowflake(1, clock=ManualClock(wall_ms=START_MS))
    with pytest.raises(InvalidArgument):
        generator.next_ids(n)  # type: ignore[arg-type]


def test_epoch_in_the_future_is_refused_not_negative() -> None:
    clock = ManualClock(wall_ms=START_MS)
    generator = Snowflake(1, clock=clock, epoch_ms=START_MS + 10_000)
    with pytest.raises(Unavailable):
        generator.next_id()
