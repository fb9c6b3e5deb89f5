"""Wire forms: every peer message round-trips; anything malformed is refused with a typed error."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.codec import pack, unpack
from blocks.core.errors import InvalidArgument, PeerError
from blocks.kv.cluster.client_wire import parse_address, parse_get, parse_keys_limit, parse_put
from blocks.kv.cluster.hlc import HlcTimestamp
from blocks.kv.cluster.membership import MemberRecord, MemberStatus
from blocks.kv.cluster.messages import (
    GetReplica,
    GetReply,
    Handoff,
    HandoffAck,
    PutAck,
    PutReplica,
    SyncLeaves,
    SyncObjects,
)
from blocks.kv.cluster.peer_wire import (
    BATCH_MESSAGES_MAX,
    Gossip,
    decode_peer_batch,
    decode_peer_message,
    encode_batch,
    encode_peer_message,
)
from blocks.kv.cluster.versions import VersionVector, encode_context, update

keys = st.binary(max_size=8)
request_ids = st.integers(0, 2**40)


@st.composite
def objects(draw: st.DrawFn) -> Any:
    obj = None
    for i in range(draw(st.integers(1, 3))):
        node = draw(st.sampled_from(["a", "b"]))
        value = draw(st.one_of(st.none(), st.binary(max_size=6)))
        context = VersionVector() if draw(st.booleans()) or obj is None else obj.context
        obj = update(obj, context, node, value, HlcTimestamp(1000 + i, i))
    return obj


records = st.builds(
    MemberRecord,
    st.text(alphabet="abc", min_size=1, max_size=4),
    st.text(max_size=10),
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.sampled_from(MemberStatus),
)
messages = st.one_of(
    st.builds(PutReplica, request_ids, keys, objects(), st.one_of(st.none(), st.text(max_size=3))),
    st.builds(PutAck, request_ids),
    st.builds(GetReplica, request_ids, keys),
    st.builds(GetReply, request_ids, st.one_of(st.none(), objects())),
    st.builds(Handoff, keys, objects()),
    st.builds(HandoffAck, keys),
    st.builds(
        SyncLeaves,
        st.integers(0, 2**64 - 1),
        st.lists(st.integers(0, 2**64 - 1), max_size=8).map(tuple),
    ),
    st.builds(
        SyncObjects,
        st.lists(st.tuples(keys, objects()), max_size=3).map(tuple),
        st.lists(st.integers(0, 255), max_size=4).map(tuple),
        st.booleans(),
    ),
    st.builds(Gossip, st.lists(records, max_size=4).map(tuple), st.booleans()),
)


@given(messages)
def test_every_peer_message_round_trips_through_msgpack(message: Any) -> None:
    wire = unpack(pack(encode_peer_message(message)))
    assert decode_peer_message(wire) == message


data_path_messages = st.one_of(
    st.builds(PutReplica, request_ids, keys, objects(), st.one_of(st.none(), st.text(max_size=3))),
    st.builds(PutAck, request_ids),
    st.builds(GetReplica, request_ids, keys),
    st.builds(GetReply, request_ids, st.one_of(st.none(), objects())),
    st.builds(Handoff, keys, objects()),
    st.builds(HandoffAck, keys),
)


@given(st.lists(data_path_messages, min_size=1, max_size=6))
def test_a_batch_round_trips_in_order(batch: list[Any]) -> None:
    wire = unpack(pack(encode_batch([encode_peer_message(m) for m in batch])))
    assert decode_peer_batch(wire) == batch


def test_a_malformed_batch_is_refused_whole() -> None:
    good = encode_peer_message(PutAck(1))
    leaves = encode_peer_message(SyncLeaves(0, ()))
    gossip = encode_peer_message(Gossip((), False))
    for raw in (
        [9],
        [9, []],  # empty
        [9, good],  # not a list of messages
        [9, [good], 1],
        [8, [good]],
        [9, [good, [9, [good]]]],  # nested
        [9, [good, leaves]],  # anti-entropy travels alone
        [9, [good, gossip]],
        [9, [good, [2, -1]]],  # one bad message spoils the batch
        [9, [good, [[1], 2]]],
        [9, [good] * (BATCH_MESSAGES_MAX + 1)],
    ):
        with pytest.raises(PeerError):
            decode_peer_batch(raw)


msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.binary(max_size=4),
        st.text(max_size=4),
        st.floats(allow_nan=False),
    ),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


@given(st.one_of(msgpack_values, st.lists(msgpack_values, max_size=5).map(lambda v: [1, *v])))
def test_fuzzed_peer_messages_only_ever_raise_peer_error(raw: Any) -> None:
    with contextlib.suppress(PeerError):
        decode_peer_message(raw)


@given(messages, st.data())
def test_a_corrupted_field_is_refused_or_still_well_typed(
    message: Any, data: st.DataObject
) -> None:
    wire = encode_peer_message(message)
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] = data.draw(msgpack_values)
    try:
        decoded = decode_peer_message(wire)
    except PeerError:
        return
    assert type(decoded).__name__ in {
        "PutReplica",
        "PutAck",
        "GetReplica",
        "GetReply",
        "Handoff",
        "HandoffAck",
        "SyncLeaves",
        "SyncObjects",
        "Gossip",
    }


CONTEXT = encode_context(VersionVector((("a", 1),)))


@pytest.mark.parametrize(
    "raw",
    [
        ["put"],
        ["put", b"k", b"v", None, None, None],  # one field short
        ["put", 5, b"v", None, None, None, 0],  # key of the wrong type
        ["put", b"k" * 70_000, b"v", None, None, None, 0],  # oversize key
        ["put", b"k", "text", None, None, None, 0],  # value of the wrong type
        ["put", b"k", b"v" * 101, None, None, None, 0],  # oversize value (limit 100 here)
        ["put", b"k", b"v", "ctx", None, None, 0],  # context not bytes
        ["put", b"k", b"v", b"\xc1", None, None, 0],  # context not msgpack
        ["put", b"k", b"v", CONTEXT, 0, None, 0],  # w out of range
        ["put", b"k", b"v", CONTEXT, 4, None, 0],
        ["put", b"k", b"v", CONTEXT, True, None, 0],
        ["put", b"k", b"v", CONTEXT, None, -1, 0],  # bad timeout
        ["put", b"k", b"v", CONTEXT, None, float("nan"), 0],
        ["put", b"k", b"v", CONTEXT, None, None, 2],  # too many hops
    ],
)
def test_bad_put_requests_are_invalid_arguments(raw: list[Any]) -> None:
    with pytest.raises(InvalidArgument):
        parse_put(raw, replicas=3, value_bytes_max=100)


def test_good_requests_parse() -> None:
    put = parse_put(["put", "k", b"v", CONTEXT, 2, 1.5, 1], replicas=3, value_bytes_max=100)
    assert (put.key, put.value, put.write_quorum, put.timeout_s, put.hops) == (
        b"k",
        b"v",
        2,
        1.5,
        1,
    )
    assert put.context == VersionVector((("a", 1),))
    get = parse_get(["get", b"k", None, None], replicas=3)
    assert (get.key, get.read_quorum, get.timeout_s) == (b"k", None, None)
    assert parse_keys_limit(["keys", 10]) == 10
    for raw in (["get", b"k"], ["get", None, None, None], ["get", b"k", 9, None]):
        with pytest.raises(InvalidArgument):
            parse_get(raw, replicas=3)
    for raw in (["keys"], ["keys", 0], ["keys", "1"]):
        with pytest.raises(InvalidArgument):
            parse_keys_limit(raw)
    assert parse_address("127.0.0.1:7101") == ("127.0.0.1", 7101)
    for bad in ("7101", "host:", "host:port", "h:70000"):
        with pytest.raises(InvalidArgument):
            parse_address(bad)
