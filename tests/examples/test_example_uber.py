"""The Uber design end to end, every match recomputed by brute force."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument
from blocks.core.hashing import key_hash
from examples.uber.geo import GeoIndex, encode
from examples.uber.session import CITIES, run_session
from examples.uber.stack import PARTITIONS
from examples.uber.trips import TripState


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    # Vincenty's formula on a sphere: a different formula from the index's haversine, and,
    # unlike the law of cosines (acos of a number within 1e-16 of 1 is 0 m for points a few
    # centimetres apart), accurate at every distance.
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    dlon = lon2 - lon1
    across = math.hypot(
        math.cos(lat2) * math.sin(dlon),
        math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlon),
    )
    along = math.sin(lat1) * math.sin(lat2) + math.cos(lat1) * math.cos(lat2) * math.cos(dlon)
    return 6_371_008.8 * math.atan2(across, along)


def test_simulation_matches_nearest_free_driver_and_keeps_every_update() -> None:
    lines: list[str] = []
    report = asyncio.run(run_session(lines.append, seed=5))

    assert report.partitions == {c: key_hash(c.encode()) % PARTITIONS for c in CITIES}
    assert len(set(report.partitions.values())) == len(CITIES)
    assert report.indexed == report.positions  # the late replay did not move anyone back
    assert report.stale_ignored >= 1

    free = set(report.positions)
    riders_seen: set[str] = set()
    for index, ((rider, lat, lon), outcome) in enumerate(
        zip(report.requests, report.outcomes, strict=True)
    ):
        if index in report.freed_before:
            free.add(report.freed_before[index])
        assert outcome.rider == rider
        if rider in riders_seen:  # an immediate second request: refused by the rate limit
            assert outcome.retry_after_ms is not None and outcome.retry_after_ms > 0
            assert outcome.driver is None
            continue
        riders_seen.add(rider)
        best = min(free, key=lambda d: (distance_m((lat, lon), report.positions[d]), d))
        assert outcome.driver == best
        assert outcome.distance_m == pytest.approx(
            distance_m((lat, lon), report.positions[best]), abs=0.5
        )
        free.discard(best)
    ids = [o.trip_id for o in report.outcomes if o.trip_id is not None]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    assert report.siblings_seen == 2
    assert report.merged_trip is not None and report.final_trip is not None
    assert report.merged_trip.state is TripState.PICKED_UP
    assert report.merged_trip.notes == {"tip_cents": 300}
    assert report.final_trip.state is TripState.COMPLETED
    assert report.final_trip.notes == {"tip_cents": 300}
    assert report.outcomes[-1].driver == report.outcomes[0].driver  # freed, then nearest


def test_geohash_known_values() -> None:
    assert encode(57.64911, 10.40744, 11) == "u4pruydqqvj"
    assert encode(37.7749, -122.4194, 5) == "9q8yy"
    with pytest.raises(InvalidArgument):
        encode(91.0, 0.0, 5)


centres = st.tuples(
    st.floats(min_value=-60.0, max_value=60.0), st.floats(min_value=-179.9, max_value=179.9)
)
offsets = st.tuples(st.floats(min_value=-2.0, max_value=2.0), st.floats(-2.0, 2.0))
RADIUS_M_MAX = 150_000.0


@given(
    centres,
    st.lists(st.tuples(offsets, st.booleans()), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=5),
    st.sampled_from([3, 4, 5]),
)
@example((0.0, 0.0), [((1.2e-7, 0.0), True)], 1, 5)  # 1.3 cm: the reference must not say 0 m
def test_nearest_equals_brute_force(
    query: tuple[float, float],
    drivers: list[tuple[tuple[float, float], bool]],
    k: int,
    precision: int,
) -> None:
    index = GeoIndex(precision, radius_m_max=RADIUS_M_MAX)
    where: dict[str, tuple[float, float]] = {}
    for number, ((dlat, dlon), free) in enumerate(drivers):
        lon = (query[1] + dlon + 180.0) % 360.0 - 180.0
        where[f"d{number}"] = (query[0] + dlat, lon)
        index.update(f"d{number}", *where[f"d{number}"], 1)
        index.set_free(f"d{number}", free)
    got = index.nearest(*query, k)
    expected = sorted(
        (distance_m(query, where[name]), name)
        for name, (_, free) in zip(where, drivers, strict=True)
        if free and distance_m(query, where[name]) <= RADIUS_M_MAX
    )[:k]
    assert len(got) == len(expected)
    for (name, metres), (want_metres, want_name) in zip(got, expected, strict=True):
        assert metres == pytest.approx(want_metres, abs=1e-3)
        assert name == want_name or metres == pytest.approx(
            distance_m(query, where[want_name]), abs=1e-3
        )


def test_entry_point_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from examples.uber.__main__ import main

    assert main(["--json", "--seed", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["siblings_seen"] == 2 and out["refused"] == ["ana"]
    assert out["final_trip"] == {"state": "completed", "notes": {"tip_cents": 300}}
