"""The wire format shared by the transports: error encoding and the frame codec."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core import errors
from blocks.core.errors import BlocksError, Conflict, Overloaded, PeerError
from blocks.core.transport import (
    FRAME_HEADER_BYTES,
    FrameDecoder,
    FrameKind,
    encode_frame,
    error_from_wire,
    error_to_wire,
)

ALL_ERROR_CLASSES = [
    cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type) and issubclass(cls, BlocksError)
]


@pytest.mark.parametrize("cls", ALL_ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_round_trips(cls: type[BlocksError]) -> None:
    error = cls("what happened")
    rebuilt = error_from_wire(error_to_wire(error))
    assert type(rebuilt) is cls
    assert str(rebuilt) == "what happened"


def test_subclass_arrives_as_nearest_core_class() -> None:
    class VersionMismatch(Conflict):
        pass

    rebuilt = error_from_wire(error_to_wire(VersionMismatch("v2")))
    assert type(rebuilt) is Conflict and str(rebuilt) == "v2"


def test_overloaded_carries_retry_after() -> None:
    rebuilt = error_from_wire(error_to_wire(Overloaded("busy", retry_after_ms=75)))
    assert isinstance(rebuilt, Overloaded) and rebuilt.retry_after_ms == 75


def test_storage_full_arrives_as_itself_with_its_retry_after() -> None:
    sent = errors.StorageFull("storage full: write failed", retry_after_ms=500)
    rebuilt = error_from_wire(error_to_wire(sent))
    assert type(rebuilt) is errors.StorageFull and rebuilt.retry_after_ms == 500
    assert isinstance(rebuilt, errors.StorageError) and isinstance(rebuilt, Overloaded)


@pytest.mark.parametrize(
    "wire",
    [None, 3, "Conflict", [], {"type": "Conflict"}, {"type": 1, "message": "m"}],
)
def test_malformed_error_is_peer_error(wire: Any) -> None:
    assert type(error_from_wire(wire)) is PeerError


def test_unknown_error_name_is_plain_blocks_error() -> None:
    rebuilt = error_from_wire({"type": "NoSuchError", "message": "m"})
    assert type(rebuilt) is BlocksError


def test_negative_retry_after_is_clamped() -> None:
    rebuilt = error_from_wire({"type": "Overloaded", "message": "m", "retry_after_ms": -5})
    assert isinstance(rebuilt, Overloaded) and rebuilt.retry_after_ms == 0


FRAMES: list[list[Any]] = [
    [FrameKind.HELLO, "node-a", None],
    [FrameKind.HELLO, "node-a", "token"],
    [FrameKind.WELCOME, "node-b"],
    [FrameKind.REQUEST, 1, {"k": b"v", "n": [1, 2.5, None]}],
    [FrameKind.ONEWAY, "hello"],
    [FrameKind.REPLY, 2**40, b"\x00" * 1000],
    [FrameKind.FAILURE, 3, {"type": "Conflict", "message": "x"}],
    [FrameKind.GOAWAY, {"type": "PeerError", "message": "bye"}],
]


def test_frames_decode_whole() -> None:
    data = b"".join(encode_frame(frame) for frame in FRAMES)
    assert FrameDecoder().feed(data) == FRAMES


def test_frames_decode_byte_by_byte() -> None:
    data = b"".join(encode_frame(frame) for frame in FRAMES)
    decoder = FrameDecoder()
    decoded: list[list[Any]] = []
    for index in range(len(data)):
        decoded.extend(decoder.feed(data[index : index + 1]))
    assert decoded == FRAMES
    assert decoder.buffered_bytes == 0


def test_trailing_partial_frame_is_kept_for_later() -> None:
    first, second = encode_frame(FRAMES[3]), encode_frame(FRAMES[4])
    decoder = FrameDecoder()
    assert decoder.feed(first + second[:3]) == [FRAMES[3]]
    assert decoder.buffered_bytes == 3
    assert decoder.feed(second[3:]) == [FRAMES[4]]


@given(st.lists(st.sampled_from(FRAMES), max_size=10), st.data())
def test_any_split_of_a_stream_decodes_the_same(frames: list[list[Any]], data: Any) -> None:
    stream = b"".join(encode_frame(frame) for frame in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    decoded: list[list[Any]] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoded.extend(decoder.feed(stream[start:end]))
    assert decoded == frames


def _raw(body: bytes) -> bytes:
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body


@pytest.mark.parametrize(
    "data",
    [
        _raw(b""),  # zero length
        (1025).to_bytes(4, "big"),  # over the limit, rejected from the header alone
        _raw(b"\xc1"),  # never-used msgpack byte
        _raw(b"\x93\x03\x01"),  # array of 3 with one element missing
        _raw(b"\x01\x02"),  # trailing bytes after a msgpack value
        _raw(b"\xa3abc"),  # not an array
        _raw(b"\x90"),  # empty array
        _raw(b"\x92\x63\x01"),  # unknown kind 99
        _raw(b"\x92\xc3\x01"),  # kind is a bool, not an int
        _raw(b"\x93\x03\xa1x\x01"),  # REQUEST with a str id
        _raw(b"\x94\x03\x01\x01\x01"),  # REQUEST with a field too many
    ],
)
def test_malformed_frames_raise_peer_error_and_poison_the_stream(data: bytes) -> None:
    decoder = FrameDecoder(frame_bytes_max=1024)
    with pytest.raises(PeerError):
        decoder.feed(data)
    with pytest.raises(PeerError):
        decoder.feed(encode_frame(FRAMES[4]))


def test_oversize_frame_is_refused_by_the_encoder() -> None:
    with pytest.raises(errors.InvalidArgument):
        encode_frame([FrameKind.ONEWAY, b"x" * 2000], frame_bytes_max=1024)


@given(st.binary(max_size=200))
def test_fuzzed_bytes_only_ever_raise_peer_error(data: bytes) -> None:
    decoder = FrameDecoder(frame_bytes_max=128)
    try:
        frames = decoder.feed(data)
    except PeerError:
        return
    for frame in frames:
        assert isinstance(frame[0], FrameKind)
