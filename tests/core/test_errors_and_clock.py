"""errors: gRPC mapping round trips; clock: ManualClock semantics and bad input."""

from __future__ import annotations

import grpc
import pytest

from blocks.core import errors
from blocks.core.clock import Clock, ManualClock, SystemClock
from blocks.core.errors import (
    BlocksError,
    InvalidArgument,
    Overloaded,
    error_from_status,
    grpc_status_of,
)

ERROR_CLASSES = [
    cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type)
    and issubclass(cls, BlocksError)
    and cls not in (BlocksError, errors.PeerError)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_maps_to_a_distinct_code_and_back(cls: type[BlocksError]) -> None:
    code, details, metadata = grpc_status_of(cls("boom"))
    assert code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN)
    rebuilt = error_from_status(code, details, metadata)
    assert type(rebuilt) is cls
    assert str(rebuilt) == "boom"


def test_codes_are_distinct() -> None:  # a refined class shares its broader class's code
    codes = [cls.grpc_code for cls in ERROR_CLASSES if cls not in errors.REFINED_CLASSES.values()]
    assert len(codes) == len(set(codes))


def test_peer_errors_read_as_internal_to_the_client() -> None:
    code, details, metadata = grpc_status_of(errors.PeerError("bad frame"))
    assert type(error_from_status(code, details, metadata)) is errors.Internal


def test_overloaded_carries_retry_after() -> None:
    code, details, metadata = grpc_status_of(Overloaded("busy", retry_after_ms=250))
    rebuilt = error_from_status(code, details, metadata)
    assert isinstance(rebuilt, Overloaded) and rebuilt.retry_after_ms == 250
    garbled = error_from_status(code, details, (("retry-after-ms", "soon"),))
    assert isinstance(garbled, Overloaded) and garbled.retry_after_ms == 0
    with pytest.raises(ValueError):
        Overloaded("x", retry_after_ms=-1)


def test_foreign_exceptions_hide_their_message() -> None:
    code, details, _ = grpc_status_of(RuntimeError("secret path /etc/shadow"))
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in details
    assert isinstance(error_from_status(grpc.StatusCode.UNIMPLEMENTED, "x"), BlocksError)


def test_errors_are_catchable_as_builtin_kinds() -> None:
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(errors.Timeout, TimeoutError)
    assert issubclass(errors.NotFound, KeyError)
    assert str(errors.NotFound("no such key")) == "no such key"


def test_manual_clock() -> None:
    clock = ManualClock(wall_ms=1_000, monotonic_s=5.0)
    assert isinstance(clock, Clock)
    clock.advance(1.5)
    clock.advance(ms=250)
    assert (clock.now_ms(), clock.monotonic()) == (2_750, 6.75)
    clock.jump_wall_ms(-2_000)  # NTP steps the wall clock back; monotonic time does not move
    assert (clock.now_ms(), clock.monotonic()) == (750, 6.75)
    clock.set_wall_ms(10)
    assert clock.now_ms() == 10
    for bad in (
        lambda: clock.advance(-1),
        lambda: clock.set_wall_ms(-1),
        lambda: clock.jump_wall_ms(-11),
        lambda: ManualClock(wall_ms=-5),
    ):
        with pytest.raises(InvalidArgument):
            bad()
    assert clock.now_ms() == 10


def test_system_clock_is_sane() -> None:
    clock = SystemClock()
    assert isinstance(clock, Clock)
    first, second = clock.monotonic(), clock.monotonic()
    assert second >= first
    assert clock.now_ms() > 1_600_000_000_000
