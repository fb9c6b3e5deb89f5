"""The wire form of search answers: packed bytes and repeated fields decode alike."""

from __future__ import annotations

import numpy as np
import pytest

from blocks.core.errors import InvalidArgument
from blocks.search import search_pb2
from blocks.search.wire import decode_batch, decode_reply, fill_batch, fill_reply


def _answer() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    ids = rng.integers(-1, 1 << 62, size=(7, 5), dtype=np.int64)
    return ids, rng.random((7, 5), dtype=np.float32)


@pytest.mark.parametrize("packed", [True, False])
def test_a_reply_round_trips_through_bytes_on_the_wire(packed: bool) -> None:
    ids, distances = _answer()
    reply = search_pb2.SearchVectorsReply()
    fill_reply(reply, ids, distances, packed=packed)
    assert bool(reply.ids_le) is packed and bool(len(reply.ids)) is not packed
    got_ids, got_distances = decode_reply(
        search_pb2.SearchVectorsReply.FromString(reply.SerializeToString())
    )
    assert got_ids.dtype == np.int64 and got_distances.dtype == np.float32
    assert np.array_equal(got_ids, ids) and np.array_equal(got_distances, distances)


def test_an_empty_answer_decodes_to_its_shape() -> None:
    reply = search_pb2.SearchVectorsReply()
    fill_reply(reply, np.empty((3, 0), np.int64), np.empty((3, 0), np.float32), packed=True)
    ids, distances = decode_reply(reply)
    assert ids.shape == distances.shape == (3, 0)


@pytest.mark.parametrize("cut", ["ids_le", "distances_le"])
def test_a_packed_reply_that_does_not_fill_its_shape_is_refused(cut: str) -> None:
    ids, distances = _answer()
    reply = search_pb2.SearchVectorsReply()
    fill_reply(reply, ids, distances, packed=True)
    setattr(reply, cut, getattr(reply, cut)[:-1])
    with pytest.raises(InvalidArgument):
        decode_reply(reply)


def test_a_repeated_reply_that_does_not_fill_its_shape_is_refused() -> None:
    reply = search_pb2.SearchVectorsReply(rows=2, k=2, ids=[1, 2, 3], distances=[0.0] * 4)
    with pytest.raises(InvalidArgument):
        decode_reply(reply)


def test_a_batch_is_filled_in_place_in_its_request() -> None:
    vectors = np.arange(12, dtype=np.float64).reshape(3, 4)
    request = search_pb2.SearchVectorsRequest(k=2)
    fill_batch(request.queries, vectors)
    parsed = search_pb2.SearchVectorsRequest.FromString(request.SerializeToString())
    assert decode_batch(parsed.queries, 4).tolist() == vectors.tolist()
