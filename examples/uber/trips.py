"""Trip records in kv: explicit states, and a merge that loses no concurrent update (pure).

Theory of operation. A trip is written by several parties who do not coordinate: the
dispatcher creates it, the driver's app marks pickup and drop-off, the rider's app adds a
tip or a rating, support may cancel it. Each writes with the version context of the copy it
read, so writes that did not see each other come back from kv as siblings, and ``merge``
folds them:

* ``events`` maps each state reached to the earliest time it was reached (union, min time);
  the trip's state is the furthest event in ``PRECEDENCE``. A cancel racing a pickup loses:
  the rider is already in the car.
* ``notes`` (tip, ratings) union; the same note written twice keeps the larger value, so
  every replica resolves the same way.

Transitions are checked by the table ``TRANSITIONS`` when a party *makes* a change
(``Trip.advance``); ``merge`` itself never refuses, because siblings are facts that happened.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from blocks.core.codec import pack, unpack
from blocks.core.errors import Corruption, FailedPrecondition, InvalidArgument

__all__ = ["PRECEDENCE", "TRANSITIONS", "Trip", "TripState", "decode", "encode", "merge"]

TRIP_BYTES_MAX = 16 * 1024
NOTES_MAX = 16


class TripState(enum.Enum):
    REQUESTED = "requested"
    ASSIGNED = "assigned"
    PICKED_UP = "picked_up"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


TRANSITIONS: dict[TripState, frozenset[TripState]] = {
    TripState.REQUESTED: frozenset({TripState.ASSIGNED, TripState.CANCELLED}),
    TripState.ASSIGNED: frozenset({TripState.PICKED_UP, TripState.CANCELLED}),
    TripState.PICKED_UP: frozenset({TripState.COMPLETED}),
    TripState.COMPLETED: frozenset(),
    TripState.CANCELLED: frozenset(),
}
PRECEDENCE: tuple[TripState, ...] = (
    TripState.REQUESTED,
    TripState.ASSIGNED,
    TripState.CANCELLED,
    TripState.PICKED_UP,
    TripState.COMPLETED,
)
"""Later entries win when concurrent versions disagree about the state."""


@dataclass(frozen=True, slots=True)
class Trip:
    trip_id: int
    rider: str
    pickup: tuple[float, float]
    driver: str | None = None
    events: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trip_id <= 0 or not self.rider:
            raise InvalidArgument("a trip needs a positive id and a rider")
        if len(self.notes) > NOTES_MAX:
            raise InvalidArgument(f"at most {NOTES_MAX} notes")
        for name in self.events:
            TripState(name)  # raises ValueError (an InvalidArgument below) if unknown

    @property
    def state(self) -> TripState:
        reached = {TripState(name) for name in self.events}
        return max(reached, key=PRECEDENCE.index) if reached else TripState.REQUESTED

    def advance(self, state: TripState, at_ms: int, *, driver: str | None = None) -> Trip:
        """This trip moved to ``state``; an illegal move raises and changes nothing."""
        if state not in TRANSITIONS[self.state]:
            raise FailedPrecondition(
                f"trip {self.trip_id} cannot go from {self.state.value} to {state.value}"
            )
        events = {**self.events, state.value: at_ms}
        return replace(self, events=events, driver=driver or self.driver)

    def noted(self, name: str, value: int) -> Trip:
        return replace(self, notes={**self.notes, name: value})


def merge(versions: Iterable[Trip]) -> Trip:
    """One trip from concurrent versions (see the module docstring)."""
    items = list(versions)
    if not items:
        raise InvalidArgument("nothing to merge")
    first = items[0]
    if any(t.trip_id != first.trip_id for t in items):
        raise InvalidArgument("cannot merge different trips")
    events: dict[str, int] = {}
    notes: dict[str, int] = {}
    for trip in items:
        for name, at_ms in trip.events.items():
            events[name] = min(at_ms, events.get(name, at_ms))
        for name, value in trip.notes.items():
            notes[name] = max(value, notes.get(name, value))
    drivers = sorted({t.driver for t in items if t.driver is not None})
    driver = drivers[0] if drivers else None  # one dispatcher assigns; siblings agree
    return replace(first, driver=driver, events=events, notes=notes)


def encode(trip: Trip) -> bytes:
    return pack(
        {
            "id": trip.trip_id,
            "rider": trip.rider,
            "pickup": list(trip.pickup),
            "driver": trip.driver,
            "events": trip.events,
            "notes": trip.notes,
        },
        size_max=TRIP_BYTES_MAX,
    )


def decode(data: bytes) -> Trip:
    """A trip from kv; anything malformed is ``Corruption`` (we wrote it)."""
    try:
        raw = unpack(data, size_max=TRIP_BYTES_MAX)
        lat, lon = raw["pickup"]
        return Trip(
            trip_id=int(raw["id"]),
            rider=str(raw["rider"]),
            pickup=(float(lat), float(lon)),
            driver=None if raw["driver"] is None else str(raw["driver"]),
            events={str(k): int(v) for k, v in raw["events"].items()},
            notes={str(k): int(v) for k, v in raw["notes"].items()},
        )
    except (InvalidArgument, KeyError, TypeError, ValueError, AttributeError) as error:
        raise Corruption(f"bad trip record: {error}") from error
