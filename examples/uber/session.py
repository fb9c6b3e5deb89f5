"""A scripted Uber simulation: drivers stream positions, riders ask for rides.

``run_session`` starts the stack in a temporary directory and plays: drivers in two cities
report positions three times each (one update is replayed late, as a retrying phone would);
riders request rides and are matched to the nearest free driver; one rider taps "request"
twice and the second is refused by the rate limit; the driver and the rider of the first trip
update it at the same moment from the same read, and both updates survive; the trip is
completed, which frees its driver for a later rider. It returns an ``UberReport`` with the
ground truth (positions, requests) and the system's answers, so a test can recompute every
match by brute force.
"""

from __future__ import annotations

import asyncio
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from blocks.core.clock import Clock, SystemClock
from blocks.core.codec import pack
from blocks.core.errors import Timeout
from examples.backends import Backend, Placement, parse_backend
from examples.common import Say, Services, wait_for_condition
from examples.uber.dispatch import Dispatcher, DriverApp, RideOutcome
from examples.uber.stack import Stack, start_stack
from examples.uber.trips import Trip, TripState

__all__ = ["CITIES", "UberReport", "run_session"]

CITIES: dict[str, tuple[float, float]] = {
    "san-francisco": (37.7749, -122.4194),
    "new-york": (40.7128, -74.0060),
}
"""City centres. A city's name is its location records' key, so it picks the partition."""
DRIVERS_PER_CITY = {"san-francisco": 6, "new-york": 3}
REPORTS_PER_DRIVER = 3
SPREAD_M = 3000.0
DRIFT_M = 150.0
CATCH_UP_TIMEOUT_S = 60.0  # a bound for a failing run, generous for a loaded machine


@dataclass(slots=True)
class UberReport:
    partitions: dict[str, int] = field(default_factory=dict)
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    indexed: dict[str, tuple[float, float]] = field(default_factory=dict)
    requests: list[tuple[str, float, float]] = field(default_factory=list)
    outcomes: list[RideOutcome] = field(default_factory=list)
    freed_before: dict[int, str] = field(default_factory=dict)
    stale_ignored: int = 0
    siblings_seen: int = 0
    write_conflicts: int = 0
    """Trip writes refused by a compare-and-set kv (then merged and written again)."""
    merged_trip: Trip | None = None
    final_trip: Trip | None = None
    seconds: float = 0.0
    placement: Placement = field(default_factory=lambda: Placement(Backend.CLUSTER))

    def summary(self) -> dict[str, object]:
        return {
            "partitions": self.partitions,
            "matches": [
                {"rider": o.rider, "trip": o.trip_id, "driver": o.driver, "metres": o.distance_m}
                for o in self.outcomes
            ],
            "refused": [o.rider for o in self.outcomes if o.retry_after_ms is not None],
            "stale_updates_ignored": self.stale_ignored,
            "siblings_seen": self.siblings_seen,
            "write_conflicts": self.write_conflicts,
            "final_trip": None
            if self.final_trip is None
            else {"state": self.final_trip.state.value, "notes": self.final_trip.notes},
            "seconds": round(self.seconds, 2),
            **self.placement.summary(),
        }


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """A point ``north_m``/``east_m`` metres from (lat, lon) (flat-Earth; fine for km)."""
    dlat = north_m / 111_195.0
    dlon = east_m / (111_195.0 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def _scatter(rng: random.Random, city: str, spread_m: float) -> tuple[float, float]:
    lat, lon = CITIES[city]
    return offset(lat, lon, rng.uniform(-spread_m, spread_m), rng.uniform(-spread_m, spread_m))


async def run_session(
    say: Say,
    *,
    seed: int = 11,
    clock: Clock | None = None,
    backend: Backend | str = Backend.CLUSTER,
) -> UberReport:
    """Run the simulation once on ``backend`` (see the module docstring)."""
    started = time.monotonic()
    report = UberReport(placement=Placement(parse_backend(backend)))
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="examples-uber-") as directory:
        async with Services() as services:
            # One ride a minute per rider: the double tap below is refused however slowly the
            # first request ran (at 0.5 a second, 2 s between the taps would admit both).
            stack = await start_stack(
                services,
                Path(directory),
                rides_per_s=1 / 60,
                ride_burst=1,
                backend=report.placement.backend,
            )
            report.placement = stack.placement
            for line in stack.placement.lines():
                say(line)
            dispatcher = Dispatcher(stack, clock or SystemClock())
            stop = asyncio.Event()
            tailing = asyncio.create_task(dispatcher.run(stop))
            try:
                await _drive(say, stack, dispatcher, report, rng)
                await _ride(say, dispatcher, report, rng)
                await _race(say, dispatcher, report)
                await _rematch(say, dispatcher, report, rng)
            finally:
                stop.set()
                await asyncio.gather(tailing, return_exceptions=True)
    report.seconds = time.monotonic() - started
    say(f"everything stopped; simulation took {report.seconds:.1f}s")
    return report


async def _drive(
    say: Say, stack: Stack, dispatcher: Dispatcher, report: UberReport, rng: random.Random
) -> None:
    apps = [
        DriverApp(f"{''.join(w[0] for w in city.split('-'))}-driver-{i + 1}", city, stack)
        for city, count in DRIVERS_PER_CITY.items()
        for i in range(count)
    ]
    ends: dict[int, int] = {}
    where = {app.driver: _scatter(rng, app.city, SPREAD_M) for app in apps}
    for _ in range(REPORTS_PER_DRIVER):
        for app in apps:
            lat, lon = where[app.driver]
            where[app.driver] = offset(lat, lon, rng.gauss(0, DRIFT_M), rng.gauss(0, DRIFT_M))
            partition, at = await app.report(*where[app.driver])
            report.partitions[app.city] = partition
            ends[partition] = max(ends.get(partition, 0), at + 1)
    # A phone retrying its first report after the later ones were delivered.
    late = apps[0]
    first = {"driver": late.driver, "seq": 1}
    partition, at = await stack.pubsub.produce(
        "driver-locations", _late_body(first, CITIES[late.city]), key=late.city.encode()
    )
    ends[partition] = max(ends.get(partition, 0), at + 1)
    report.positions = dict(where)

    async def caught_up() -> bool:
        return dispatcher.caught_up(ends)

    if not await wait_for_condition(caught_up, timeout_s=CATCH_UP_TIMEOUT_S):
        raise Timeout(f"the dispatcher did not read the feed within {CATCH_UP_TIMEOUT_S} s")
    for driver in where:
        position = dispatcher.index.position(driver)
        report.indexed[driver] = (position.lat, position.lon)
    report.stale_ignored = dispatcher.updates_stale
    say(
        f"{len(apps)} drivers sent {len(apps) * REPORTS_PER_DRIVER} positions; partitions by "
        f"city {report.partitions}; dispatcher applied {dispatcher.updates_applied}, ignored "
        f"{dispatcher.updates_stale} stale"
    )


def _late_body(update: dict[str, object], where: tuple[float, float]) -> bytes:
    return pack({**update, "lat": where[0], "lon": where[1]})


async def _request(
    say: Say, dispatcher: Dispatcher, report: UberReport, rider: str, lat: float, lon: float
) -> RideOutcome:
    report.requests.append((rider, lat, lon))
    outcome = await dispatcher.request_ride(rider, lat, lon)
    report.outcomes.append(outcome)
    if outcome.retry_after_ms is not None:
        say(f"  {rider}: refused by the rate limit, retry after {outcome.retry_after_ms} ms")
    elif outcome.matched:
        say(
            f"  {rider}: trip {outcome.trip_id} -> {outcome.driver}, "
            f"{outcome.distance_m:.0f} m away"
        )
    else:
        say(f"  {rider}: trip {outcome.trip_id}, no free driver nearby")
    return outcome


async def _ride(say: Say, dispatcher: Dispatcher, report: UberReport, rng: random.Random) -> None:
    say("ride requests:")
    riders = [
        ("ana", "san-francisco"),
        ("ben", "san-francisco"),
        ("cho", "new-york"),
        ("dev", "san-francisco"),
    ]
    for rider, city in riders:
        await _request(say, dispatcher, report, rider, *_scatter(rng, city, SPREAD_M))
        if rider == "ana":  # a double tap on "request"
            await _request(say, dispatcher, report, rider, *report.requests[-1][1:])


async def _race(say: Say, dispatcher: Dispatcher, report: UberReport) -> None:
    trip_id = report.outcomes[0].trip_id
    assert trip_id is not None
    # The driver's app and the rider's app read the trip at the same moment...
    (trip_a, context_a, _), (trip_b, context_b, _) = await asyncio.gather(
        dispatcher.read_trip(trip_id), dispatcher.read_trip(trip_id)
    )
    now = dispatcher.clock.now_ms()
    # ...and write back concurrently: a pickup and a tip, each with its own read's context.
    await asyncio.gather(
        dispatcher.write_trip(trip_a.advance(TripState.PICKED_UP, now), context_a),
        dispatcher.write_trip(trip_b.noted("tip_cents", 300), context_b),
    )
    merged, _, siblings = await dispatcher.read_trip(trip_id)
    report.siblings_seen = siblings
    report.write_conflicts = dispatcher.write_conflicts
    report.merged_trip = merged
    say(
        f"trip {trip_id}: driver's pickup and rider's tip raced; kv kept {siblings} siblings "
        f"and refused {dispatcher.write_conflicts} stale writes (merged and written again); "
        f"merged -> state {merged.state.value}, notes {merged.notes}"
    )
    done = await dispatcher.complete(trip_id)
    report.final_trip, _, _ = await dispatcher.read_trip(trip_id)
    report.freed_before[len(report.requests)] = done.driver or ""
    say(f"trip {trip_id} completed; {done.driver} is free again")


async def _rematch(
    say: Say, dispatcher: Dispatcher, report: UberReport, rng: random.Random
) -> None:
    freed = report.outcomes[0].driver
    assert freed is not None
    position = dispatcher.index.position(freed)
    lat, lon = offset(position.lat, position.lon, 60.0, -40.0)
    await _request(say, dispatcher, report, "eve", lat, lon)
