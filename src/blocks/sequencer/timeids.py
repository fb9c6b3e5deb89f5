"""UUIDv7 (RFC 9562) and ULID: 128-bit time-ordered IDs that need no worker id.

Theory of operation
-------------------
Both formats start with a 48-bit Unix millisecond timestamp followed by random bits (74 for
UUIDv7 after the version and variant fields, 80 for ULID). Randomness makes collisions between
independent generators negligible; the leading timestamp makes IDs sort by creation time.

Within one millisecond a generator stays *monotonic* the way RFC 9562 section 6.2 method 3
describes: the first ID of a millisecond takes fresh random bits with the top bit cleared
(so there is room to count up), and each following ID of the same millisecond adds a random
increment of 1 to 2**32 to the previous random field. If the clock goes backwards the
generator keeps using its last timestamp, and if the random field would overflow it moves to
the next millisecond itself (running slightly ahead of the clock rather than repeating).
Either way every ID is greater than the one before. Time comes from an injected ``Clock`` and
randomness from an injected ``random.Random``.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument

__all__ = ["IDS_PER_CALL_MAX", "Ulid", "UlidGenerator", "Uuid7Generator", "uuid7_unix_ms"]

IDS_PER_CALL_MAX = 1 << 20
TIMESTAMP_MAX_MS = (1 << 48) - 1
INCREMENT_MAX = 1 << 32
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_VALUES = {char: index for index, char in enumerate(CROCKFORD)}


class _MonotonicRandom:
    """The shared state machine: (timestamp, random field) pairs that only increase."""

    __slots__ = ("_clock", "_last_ms", "_last_random", "_random_bits", "_rng")

    def __init__(self, random_bits: int, clock: Clock | None, rng: random.Random | None) -> None:
        self._random_bits = random_bits
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._last_ms = -1
        self._last_random = 0

    def next_pair(self) -> tuple[int, int]:
        now_ms = self._clock.now_ms()
        if now_ms > self._last_ms:
            self._last_ms = now_ms
            self._last_random = self._rng.getrandbits(self._random_bits - 1)
        else:
            bumped = self._last_random + 1 + self._rng.randrange(INCREMENT_MAX)
            if bumped >> self._random_bits:
                self._last_ms += 1
                bumped = self._rng.getrandbits(self._random_bits - 1)
            self._last_random = bumped
        if self._last_ms > TIMESTAMP_MAX_MS:
            raise InvalidArgument("clock reading does not fit a 48-bit millisecond field")
        return self._last_ms, self._last_random


def _check_count(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= IDS_PER_CALL_MAX:
        raise InvalidArgument(f"n must be an int in [0, {IDS_PER_CALL_MAX}], got {n!r}")


class Uuid7Generator:
    """UUIDv7 values (``uuid.UUID``), strictly increasing per generator."""

    __slots__ = ("_state",)

    def __init__(self, *, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self._state = _MonotonicRandom(74, clock, rng)

    def next_id(self) -> uuid.UUID:
        unix_ms, rand = self._state.next_pair()
        rand_a = rand >> 62
        rand_b = rand & ((1 << 62) - 1)
        value = (unix_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
        return uuid.UUID(int=value)

    def next_ids(self, n: int) -> list[uuid.UUID]:
        _check_count(n)
        return [self.next_id() for _ in range(n)]


def uuid7_unix_ms(value: uuid.UUID) -> int:
    """The creation time of a UUIDv7; ``InvalidArgument`` for other versions."""
    if value.version != 7 or value.variant != uuid.RFC_4122:
        raise InvalidArgument(f"{value} is not an RFC 9562 version 7 UUID")
    return value.int >> 80


@dataclass(frozen=True, slots=True, order=True)
class Ulid:
    """A ULID as a 128-bit integer; ``str()`` gives the 26-character Crockford form."""

    value: int

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or not 0 <= self.value < (1 << 128):
            raise InvalidArgument("a ULID is an integer in [0, 2**128)")

    @property
    def unix_ms(self) -> int:
        return self.value >> 80

    def __str__(self) -> str:
        chars = []
        value = self.value
        for _ in range(26):
            chars.append(CROCKFORD[value & 31])
            value >>= 5
        return "".join(reversed(chars))

    @classmethod
    def parse(cls, text: str) -> Ulid:
        """Parse 26 Crockford base32 characters (case-insensitive); ``InvalidArgument`` if bad."""
        if not isinstance(text, str) or len(text) != 26:
            raise InvalidArgument("a ULID string has exactly 26 characters")
        value = 0
        for char in text.upper():
            digit = _CROCKFORD_VALUES.get(char)
            if digit is None:
                raise InvalidArgument(f"invalid ULID character {char!r}")
            value = (value << 5) | digit
        if value >> 128:
            raise InvalidArgument("ULID string overflows 128 bits (first character above 7)")
        return cls(value)


class UlidGenerator:
    """ULIDs, strictly increasing per generator."""

    __slots__ = ("_state",)

    def __init__(self, *, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self._state = _MonotonicRandom(80, clock, rng)

    def next_id(self) -> Ulid:
        unix_ms, rand = self._state.next_pair()
        return Ulid((unix_ms << 80) | rand)

    def next_ids(self, n: int) -> list[Ulid]:
        _check_count(n)
        return [self.next_id() for _ in range(n)]
