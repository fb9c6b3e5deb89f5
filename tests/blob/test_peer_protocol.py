"""The nodes' messages (``peer_protocol``): a peer's shards through ``PeerShardStore`` in the
writer's namespace, the fallback to the node's own directory, any malformed message refused
with the block's own errors, changing nothing (STYLE 13), and the same over HTTP
(``peers.HttpPeerChannel`` against a served node: errors keep their class, a wrong token
is refused)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.blob.cluster.peer_protocol import PeerShardStore, ShardHost, serve_message
from blocks.blob.cluster.peers import HttpPeerChannel
from blocks.blob.s3.handler import S3Config
from blocks.blob.storage.shards import DirectoryShardStore
from blocks.blob.store import LocalBlobStore
from blocks.core.errors import BlocksError, InvalidArgument, Unavailable

from .server_thread import running_server

WRITER = "ab" * 8
CHUNK = "c" * 64


class Direct:
    """A channel that hands each message to ``host`` in this thread."""

    name = "peer:1"

    def __init__(self, host: ShardHost) -> None:
        self.host = host

    def call(self, message: list[Any]) -> Any:
        return serve_message(self.host, message)


@pytest.fixture
def host(tmp_path: Path) -> ShardHost:
    own = DirectoryShardStore(tmp_path / "local", name="local", fsync=False)
    return ShardHost(tmp_path / "peers", own, fsync=False)


def test_shards_round_trip_in_the_writers_namespace(host: ShardHost) -> None:
    peer = PeerShardStore(Direct(host), WRITER)
    assert peer.get_shard(CHUNK, 0) is None
    peer.put_shard(CHUNK, 0, b"zero")
    peer.put_shard(CHUNK, 1, b"one")
    assert (peer.get_shard(CHUNK, 0), peer.get_shard(CHUNK, 1)) == (b"zero", b"one")
    assert list(peer.chunk_ids()) == [CHUNK]
    assert list(PeerShardStore(Direct(host), "cd" * 8).chunk_ids()) == []  # another writer's
    peer.delete_chunk(CHUNK)
    assert peer.get_shard(CHUNK, 0) is None and list(peer.chunk_ids()) == []


def test_a_read_missing_in_the_namespace_falls_back_to_the_nodes_own(host: ShardHost) -> None:
    host.own.put_shard(CHUNK, 2, b"old")
    assert PeerShardStore(Direct(host), WRITER).get_shard(CHUNK, 2) == b"old"


def test_a_refusal_is_unavailable_to_the_chunk_layer(host: ShardHost) -> None:
    peer = PeerShardStore(Direct(host), WRITER)
    with pytest.raises(Unavailable):
        peer.put_shard("not a chunk id", 0, b"x")  # InvalidArgument at the peer


messages = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=12,
)
ops = st.sampled_from(["shard.put", "shard.get", "shard.delete", "shard.list", "meta.apply"])


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    message=messages | st.builds(lambda op, rest: [op, *rest], ops, st.lists(messages, max_size=4))
)
def test_any_malformed_message_raises_only_our_errors(host: ShardHost, message: Any) -> None:
    with contextlib.suppress(BlocksError):
        serve_message(host, message)
    assert not list(host.own.chunk_ids())


def test_unknown_ops_and_wrong_arity_are_invalid(host: ShardHost) -> None:
    for message in ([], ["shard.nothing"], ["shard.get", WRITER], [["shard.get"]], "shard.list"):
        with pytest.raises(InvalidArgument):
            serve_message(host, message)


def test_over_http_errors_keep_their_class_and_a_wrong_token_is_refused(
    host: ShardHost, tmp_path: Path
) -> None:
    store = LocalBlobStore(tmp_path / "data", fsync=False)
    config = S3Config(cluster_token="token")
    try:
        with running_server(store, config=config, local_shards=host) as server:
            channel = HttpPeerChannel(server.endpoint, "token")
            peer = PeerShardStore(channel, WRITER)
            peer.put_shard(CHUNK, 3, b"three")
            assert peer.get_shard(CHUNK, 3) == b"three"
            with pytest.raises(InvalidArgument, match="known op"):
                channel.call(["shard.nothing"])
            with pytest.raises(Unavailable, match="does not replicate"):
                channel.call(["meta.snapshot"])
            with pytest.raises(Unavailable, match="HTTP 404"):
                HttpPeerChannel(server.endpoint, "wrong").call(["shard.list", WRITER])
    finally:
        store.close()
