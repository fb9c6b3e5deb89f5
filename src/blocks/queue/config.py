"""Queue configuration and the argument checks every layer shares.

Theory of operation: a ``QueueConfig`` is validated when built, so a queue never exists with
limits that make no sense; the ``check_*`` helpers validate per-call arguments the same way in
the pure core, the driver and the service, raising ``InvalidArgument`` before anything changes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from blocks.core.errors import InvalidArgument

__all__ = [
    "BODY_BYTES_MAX",
    "PRIORITY_MAX",
    "QUEUES_MAX",
    "QueueConfig",
    "check_body",
    "check_ms",
    "check_name",
    "check_priority",
]

BODY_BYTES_MAX = 1 << 20  # default bound on one message body (1 MiB)
PRIORITY_MAX = 255  # priorities are 0..255, higher first
QUEUES_MAX = 1000  # queues per broker
DAY_MS = 24 * 3600 * 1000
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$")


def check_name(name: object, what: str = "queue name") -> str:
    """A queue name: 1..80 characters of letters, digits, ``_``, ``.`` and ``-``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(f"{what} must match [A-Za-z0-9_.-]{{1,80}}, got {name!r}")
    return name


def check_ms(value: object, what: str, maximum: int = 2**62) -> int:
    """A non-negative integer number of milliseconds, at most ``maximum``."""
    if type(value) is not int or not 0 <= value <= maximum:
        raise InvalidArgument(f"{what} must be an integer within 0..{maximum}, got {value!r}")
    return value


def check_body(body: object, body_bytes_max: int) -> bytes:
    if not isinstance(body, bytes | bytearray):
        raise InvalidArgument(f"a message body must be bytes, got {type(body).__name__}")
    if len(body) > body_bytes_max:
        raise InvalidArgument(f"body of {len(body)} bytes exceeds the limit of {body_bytes_max}")
    return bytes(body)


def check_priority(priority: object) -> int:
    if type(priority) is not int or not 0 <= priority <= PRIORITY_MAX:
        raise InvalidArgument(f"priority must be an integer within 0..{PRIORITY_MAX}")
    return priority


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's name, behaviour and limits.

    ``max_receives`` 0 means unlimited; otherwise a message received that many times moves to
    ``dead_letter`` (or is discarded when there is none) the next time it comes back.
    """

    name: str
    visibility_ms: int = 30_000  # default hiding time of a received message
    max_receives: int = 0
    dead_letter: str | None = None
    fifo: bool = False
    dedup_window_ms: int = 300_000
    messages_max: int = 100_000
    body_bytes_max: int = BODY_BYTES_MAX
    receive_max: int = 100  # messages per receive call
    visibility_ms_max: int = 12 * 3600 * 1000
    delay_ms_max: int = DAY_MS
    dedup_entries_max: int = 100_000

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.dead_letter is not None:
            check_name(self.dead_letter, "dead_letter")
            if self.dead_letter == self.name:
                raise InvalidArgument("a queue cannot be its own dead-letter queue")
        check_ms(self.visibility_ms, "visibility_ms", self.visibility_ms_max)
        check_ms(self.dedup_window_ms, "dedup_window_ms", 7 * DAY_MS)
        check_ms(self.delay_ms_max, "delay_ms_max", 7 * DAY_MS)
        check_ms(self.visibility_ms_max, "visibility_ms_max", 7 * DAY_MS)
        for label, low, high in (
            ("max_receives", 0, 1000),
            ("messages_max", 1, 10_000_000),
            ("body_bytes_max", 0, 64 << 20),
            ("receive_max", 1, 10_000),
            ("dedup_entries_max", 1, 10_000_000),
        ):
            value = getattr(self, label)
            if type(value) is not int or not low <= value <= high:
                raise InvalidArgument(f"{label} must be an integer within {low}..{high}")
        if not isinstance(self.fifo, bool):
            raise InvalidArgument("fifo must be a bool")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> QueueConfig:
        if not isinstance(data, dict):
            raise InvalidArgument("a queue config must be a mapping")
        try:
            return cls(**data)
        except TypeError as error:
            raise InvalidArgument(f"bad queue config: {error}") from None
