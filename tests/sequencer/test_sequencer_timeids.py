from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument
from blocks.sequencer.timeids import Ulid, UlidGenerator, Uuid7Generator, uuid7_unix_ms

START_MS = 1_700_000_000_000


def test_uuid7_fields_follow_rfc_9562() -> None:
    clock = ManualClock(wall_ms=START_MS)
    value = Uuid7Generator(clock=clock, rng=random.Random(0)).next_id()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert uuid7_unix_ms(value) == START_MS
    assert str(value)[14] == "7"


def test_uuid7_monotonic_within_a_millisecond_and_after_backwards_step() -> None:
    clock = ManualClock(wall_ms=START_MS)
    generator = Uuid7Generator(clock=clock, rng=random.Random(3))
    ids = generator.next_ids(5000)
    clock.jump_wall_ms(-1000)
    ids += generator.next_ids(10)
    assert ids == sorted(set(ids))
    assert all(v.version == 7 and v.variant == uuid.RFC_4122 for v in ids)
    assert {uuid7_unix_ms(v) for v in ids} == {START_MS}


def test_uuid7_refuses_other_versions() -> None:
    with pytest.raises(InvalidArgument):
        uuid7_unix_ms(uuid.uuid4())


def test_random_field_overflow_moves_to_next_millisecond() -> None:
    class MaxRandom(random.Random):
        def getrandbits(self, k: int) -> int:
            return (1 << k) - 1

        def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
            return 1 << 31

    clock = ManualClock(wall_ms=START_MS)
    generator = UlidGenerator(clock=clock, rng=MaxRandom())
    ids = generator.next_ids(3)
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert ids[0].unix_ms == START_MS


@given(value=st.integers(0, (1 << 128) - 1))
def test_ulid_text_round_trips_and_sorts_like_ints(value: int) -> None:
    text = str(Ulid(value))
    assert len(text) == 26
    assert Ulid.parse(text) == Ulid(value)
    assert Ulid.parse(text.lower()) == Ulid(value)


@given(a=st.integers(0, (1 << 128) - 1), b=st.integers(0, (1 << 128) - 1))
def test_ulid_string_order_matches_value_order(a: int, b: int) -> None:
    assert (str(Ulid(a)) < str(Ulid(b))) == (a < b)


def test_ulid_generator_monotonic() -> None:
    clock = ManualClock(wall_ms=START_MS)
    generator = UlidGenerator(clock=clock, rng=random.Random(4))
    ids = generator.next_ids(1000)
    clock.advance(ms=1)
    ids += generator.next_ids(1000)
    assert ids == sorted(set(ids))
    assert ids[-1].unix_ms == START_MS + 1


@pytest.mark.parametrize(
    "text",
    ["", "0" * 25, "0" * 27, "8" + "0" * 25, "0" * 25 + "U", "0" * 25 + "!", b"0" * 26],
)
def test_ulid_parse_refuses_bad_text(text: object) -> None:
    with pytest.raises(InvalidArgument):
        Ulid.parse(text)  # type: ignore[arg-type]


def test_known_ulid_encoding() -> None:
    assert str(Ulid(0)) == "0" * 26
    assert str(Ulid((1 << 128) - 1)) == "7" + "Z" * 25
    assert Ulid.parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unix_ms == 1469922850259
