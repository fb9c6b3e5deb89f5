"""Driver apps, the dispatcher and the trip lifecycle over the Uber stack.

Theory of operation. A ``DriverApp`` publishes its position to the ``driver-locations``
topic keyed by its city, so one city's updates land in one partition, in order, and the
dispatcher serving that city reads only that partition. Each update carries the driver's own
sequence number; the index ignores anything not newer, so replays and duplicates are harmless.

The ``Dispatcher`` tails its partitions into a ``GeoIndex`` (one long-poll fetch loop per
partition, remembering the next offset). A ride request is admitted by the rider's token
bucket on the rate-limit server, gets a Snowflake trip id from the sequencer, and is matched
to the nearest free driver; choosing and reserving the driver happen with no ``await`` in
between, so two requests in this dispatcher can never get the same driver. The trip is then
written to kv. Every later change (pickup, drop-off, tip, rating) is a read-modify-write with
the read's version context; writes that raced come back as siblings and ``trips.merge``
folds them, so none is lost. On a compare-and-set store (``--backend engines`` with Redis)
the write that lost the race is refused instead, and ``write_trip`` folds it into the newer
trip with the same ``trips.merge`` and writes again: the same trip either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from blocks.core.clock import Clock
from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, NotFound
from examples.common import put_merging
from examples.ports import VersionedRead
from examples.uber.geo import GeoIndex
from examples.uber.stack import LOCATIONS, PARTITIONS, Stack
from examples.uber.trips import Trip, TripState, decode, encode, merge

__all__ = ["Dispatcher", "DriverApp", "RideOutcome", "trip_key"]

FETCH_WAIT_MS = 50
FETCH_BATCH_MAX = 500
LOCATION_BYTES_MAX = 1024
log = logging.getLogger(__name__)


def trip_key(trip_id: int) -> str:
    return f"trip:{trip_id}"


class DriverApp:
    """A driver's phone: ``await app.report(lat, lon)`` publishes one position."""

    def __init__(self, driver: str, city: str, stack: Stack) -> None:
        self.driver, self.city, self._stack = driver, city, stack
        self.sequence = 0

    async def report(self, lat: float, lon: float) -> tuple[int, int]:
        """Publish a position; returns (partition, offset) of the record."""
        self.sequence += 1
        body = pack({"driver": self.driver, "lat": lat, "lon": lon, "seq": self.sequence})
        return await self._stack.pubsub.produce(LOCATIONS, body, key=self.city.encode())


@dataclass(frozen=True, slots=True)
class RideOutcome:
    """A matched ride (``trip_id`` and ``driver``), or why not (``refused``/no driver)."""

    rider: str
    trip_id: int | None = None
    driver: str | None = None
    distance_m: float | None = None
    retry_after_ms: int | None = None

    @property
    def matched(self) -> bool:
        return self.driver is not None


class Dispatcher:
    """Matches riders with drivers; see the module docstring."""

    def __init__(
        self,
        stack: Stack,
        clock: Clock,
        *,
        partitions: tuple[int, ...] = tuple(range(PARTITIONS)),
        precision: int = 6,
    ) -> None:
        self.stack, self.clock = stack, clock
        self.index = GeoIndex(precision)
        self.partitions = partitions
        self.next_offset: dict[int, int] = dict.fromkeys(partitions, 0)
        self.updates_applied = 0
        self.updates_stale = 0
        self.write_conflicts = 0
        """Trip writes a compare-and-set store refused (then merged and written again)."""

    # -- the location feed -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tail every partition until ``stop`` is set."""
        # One call first: the client finds the broker's data path on its first call, and
        # several first calls at once race on that discovery and drop the connection.
        await self.stack.pubsub.fetch(LOCATIONS, self.partitions[0], 0, 1)
        await asyncio.gather(*(self._tail(p, stop) for p in self.partitions))

    async def _tail(self, partition: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            records = await self.stack.pubsub.fetch(
                LOCATIONS,
                partition,
                self.next_offset[partition],
                FETCH_BATCH_MAX,
                wait_ms=FETCH_WAIT_MS,
            )
            for record in records:
                self._apply(record.value)
                self.next_offset[partition] = record.offset + 1

    def _apply(self, body: bytes) -> None:
        try:
            update = unpack(body, size_max=LOCATION_BYTES_MAX)
            fresh = self.index.update(
                str(update["driver"]),
                float(update["lat"]),
                float(update["lon"]),
                int(update["seq"]),
            )
        except (BlocksError, KeyError, TypeError, ValueError) as error:
            log.warning("dropped a malformed location update: %s", error)
            return
        if fresh:
            self.updates_applied += 1
        else:
            self.updates_stale += 1

    def caught_up(self, ends: dict[int, int]) -> bool:
        """Whether every record up to ``ends[partition]`` (exclusive) has been applied."""
        return all(self.next_offset.get(p, 0) >= end for p, end in ends.items())

    # -- rides -------------------------------------------------------------------------------

    async def request_ride(self, rider: str, lat: float, lon: float) -> RideOutcome:
        """Admit, number, match and record one ride request."""
        decision = await self.stack.ratelimit.acquire(f"rider:{rider}")
        if not decision.allowed:
            return RideOutcome(rider, retry_after_ms=decision.retry_after_ms)
        trip_id = await self.stack.sequencer.next_id()
        now = self.clock.now_ms()
        trip = Trip(trip_id, rider, (lat, lon), events={TripState.REQUESTED.value: now})
        nearest = self.index.nearest(lat, lon, 1)
        if not nearest:
            trip = trip.advance(TripState.CANCELLED, now)
            await self.stack.kv.put(trip_key(trip_id), encode(trip))
            return RideOutcome(rider, trip_id)
        driver, distance_m = nearest[0]
        self.index.set_free(driver, False)  # no await since nearest(): nobody else got them
        trip = trip.advance(TripState.ASSIGNED, now, driver=driver)
        try:
            await self.stack.kv.put(trip_key(trip_id), encode(trip))
        except BlocksError:
            self.index.set_free(driver, True)
            raise
        return RideOutcome(rider, trip_id, driver, distance_m)

    async def read_trip(self, trip_id: int) -> tuple[Trip, bytes, int]:
        """The trip (siblings merged), the context to write back with, and how many
        siblings there were."""
        read = await self.stack.kv.get(trip_key(trip_id))
        if read.value is None:
            raise NotFound(f"no trip {trip_id}")
        return merge(decode(s) for s in read.siblings), read.context, len(read.siblings)

    async def write_trip(self, trip: Trip, context: bytes) -> Trip:
        """Write ``trip`` superseding the read of ``context``; returns what was written (on a
        compare-and-set store a refused write is merged into the newer trip and retried)."""
        written = trip

        def remerge(current: VersionedRead) -> bytes:
            nonlocal written
            written = merge([written, *(decode(s) for s in current.siblings)])
            return encode(written)

        key = trip_key(trip.trip_id)
        self.write_conflicts += await put_merging(
            self.stack.kv, key, encode(trip), context, remerge
        )
        return written

    async def update_trip(self, trip_id: int, change: Callable[[Trip], Trip]) -> Trip:
        trip, context, _ = await self.read_trip(trip_id)
        changed = await self.write_trip(change(trip), context)
        if changed.state in (TripState.COMPLETED, TripState.CANCELLED) and changed.driver:
            self.index.set_free(changed.driver, True)
        return changed

    async def complete(self, trip_id: int) -> Trip:
        now = self.clock.now_ms()
        return await self.update_trip(trip_id, lambda t: t.advance(TripState.COMPLETED, now))
