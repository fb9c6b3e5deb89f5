"""Access keys, bucket owners and canned policies without processes: the pure rule
(``s3.access.decide``/``classify``), the key file, and the owner kept in the journal,
replayed at open and replicated to peers (``records.BucketPut``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from blocks.blob import LocalBlobStore
from blocks.blob.cluster.replica import ReplicatedBlobStore
from blocks.blob.s3.access import (
    PRIVATE,
    PUBLIC_READ,
    Action,
    acl_document,
    canned_acl,
    classify,
    decide,
    parse_access_keys,
)
from blocks.blob.s3.awschunked import S3RequestError
from blocks.blob.storage.records import BucketPut, decode, encode
from blocks.blob.storage.shards import MemoryShardStore, ShardStore
from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, NotFound


def _code(call: object, *args: object) -> str:
    with pytest.raises(S3RequestError) as error:
        call(*args)  # type: ignore[operator]
    return error.value.code


def test_key_file_lines_and_errors() -> None:
    keys = parse_access_keys("# comment\n\nalice sekret-01\n  root   sekret-02 admin \n")
    assert [(k.access_key, k.secret, k.admin) for k in keys] == [
        ("alice", "sekret-01", False),
        ("root", "sekret-02", True),
    ]
    for bad in ("alice", "alice s3cret-1 root", "a sekret-01", "alice short", "x y z w"):
        with pytest.raises(InvalidArgument, match="line 1"):
            parse_access_keys(bad)
    with pytest.raises(InvalidArgument, match="line 2: key 'alice' repeated"):
        parse_access_keys("alice sekret-01\nalice sekret-02\n")


def test_classify_names_reads_and_owner_operations() -> None:
    assert classify("GET", "", "", {}) is Action.LIST_BUCKETS
    assert classify("PUT", "b", "", {}) is Action.CREATE_BUCKET
    assert classify("PUT", "b", "", {"acl": ""}) is Action.OWNER
    assert classify("GET", "b", "", {"acl": ""}) is Action.OWNER
    assert classify("GET", "b", "", {"list-type": "2", "prefix": "a"}) is Action.READ
    assert classify("HEAD", "b", "", {}) is Action.READ
    assert classify("GET", "b", "", {"uploads": ""}) is Action.OWNER
    assert classify("DELETE", "b", "", {}) is Action.OWNER
    assert classify("GET", "b", "k", {"response-content-type": "x"}) is Action.READ
    assert classify("HEAD", "b", "k", {"partNumber": "1"}) is Action.READ
    assert classify("GET", "b", "k", {"uploadId": "u"}) is Action.OWNER
    assert classify("GET", "b", "k", {"tagging": ""}) is Action.OWNER
    assert classify("PUT", "b", "k", {}) is Action.OWNER
    assert classify("POST", "b", "", {"delete": ""}) is Action.OWNER


def test_decide_is_owner_admin_or_public_read_only() -> None:
    mine, public = ("alice", PRIVATE), ("alice", PUBLIC_READ)
    decide("alice", False, Action.OWNER, mine)
    decide("root", True, Action.OWNER, mine)
    decide("root", True, Action.OWNER, None)  # an admin reaches the store's own NoSuchBucket
    decide("bob", False, Action.READ, public)
    decide(None, False, Action.READ, public)
    decide("bob", False, Action.CREATE_BUCKET, None)
    decide("bob", False, Action.LIST_BUCKETS, None)
    assert _code(decide, "bob", False, Action.OWNER, mine) == "AccessDenied"
    assert _code(decide, "bob", False, Action.READ, mine) == "AccessDenied"
    assert _code(decide, "bob", False, Action.OWNER, public) == "AccessDenied"
    assert _code(decide, None, False, Action.OWNER, public) == "AccessDenied"
    assert _code(decide, None, False, Action.READ, mine) == "AccessDenied"
    assert _code(decide, None, False, Action.READ, None) == "AccessDenied"
    assert _code(decide, None, False, Action.LIST_BUCKETS, None) == "AccessDenied"
    assert _code(decide, "bob", False, Action.READ, None) == "NoSuchBucket"
    assert _code(decide, "bob", False, Action.OWNER, ("", "")) == "AccessDenied"  # ownerless


def test_canned_acl_header() -> None:
    assert canned_acl({}, PRIVATE) == PRIVATE
    assert canned_acl({"x-amz-acl": "Public-Read"}, None) == PUBLIC_READ
    assert _code(canned_acl, {"x-amz-acl": "authenticated-read"}, None) == "NotImplemented"
    assert _code(canned_acl, {"x-amz-grant-read": "id=x"}, None) == "NotImplemented"
    document = acl_document("a<b", PUBLIC_READ).decode()
    assert "<ID>a&lt;b</ID>" in document and "AllUsers" in document and "READ" in document
    assert "AllUsers" not in acl_document("a", PRIVATE).decode()


def test_bucket_put_record_keeps_owner_and_old_records_decode() -> None:
    record = BucketPut("b", 5, "alice", PUBLIC_READ)
    assert decode(encode(record)) == record
    assert decode(encode(BucketPut("b", 5))) == BucketPut("b", 5, "", "")


def test_owner_and_policy_survive_reopening(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, fsync=False)
    store.create_bucket("owned", "alice", PRIVATE)
    store.create_bucket("plain")
    store.set_bucket_acl("owned", PUBLIC_READ)
    with pytest.raises(NotFound, match="no such bucket"):
        store.set_bucket_acl("missing", PUBLIC_READ)
    store.close()
    store = LocalBlobStore(tmp_path, fsync=False)
    assert store.bucket_access("owned") == ("alice", PUBLIC_READ)
    assert store.bucket_access("plain") == ("", "")
    assert store.bucket_access("missing") is None
    store.delete_bucket("owned")
    store.create_bucket("owned", "bob", PRIVATE)  # a new bucket of that name: a new owner
    store.close()
    store = LocalBlobStore(tmp_path, fsync=False)
    assert store.bucket_access("owned") == ("bob", PRIVATE)
    store.close()


class _Pushes:
    """Hands every pushed record to the peers; answers key catch-ups from ``source``."""

    def __init__(self, me: ReplicatedBlobStore | None, *peers: ReplicatedBlobStore) -> None:
        self.me, self.peers = me, peers

    def replicate(self, records: list[bytes]) -> None:
        for peer in self.peers:
            for record in records:
                peer.apply_remote(record)

    def read_bucket(self, bucket: str) -> Callable[[], None]:
        def finish() -> None:
            if self.me is None:
                return  # a writer whose pushes reach every peer: nothing newer there
            for peer in self.peers:
                for record in peer.bucket_records(bucket):
                    self.me.apply_remote(record)

        return finish

    def catch_up_key(self, bucket: str, key: str) -> bool:
        assert self.me is not None
        applied = False
        for peer in self.peers:
            for record in peer.key_records(bucket, key):
                applied |= self.me.apply_remote(record)
        return applied


def _replica(name: str, shards: dict[str, ShardStore]) -> ReplicatedBlobStore:
    return ReplicatedBlobStore(
        nodes=shards,
        codec="rs:2+1",
        chunk_bytes=1024,
        inline_bytes_max=0,
        owned_nodes=(),
        node_id=name * 16,
        clock=ManualClock(1_000_000),
    )


def test_owner_and_policy_are_replicated_metadata() -> None:
    shards: dict[str, ShardStore] = {n: MemoryShardStore(n) for n in ("x", "y", "z")}
    a, b, c = (_replica(n, shards) for n in "abc")
    a.replicator = _Pushes(None, b)
    a.create_bucket("shared", "alice", PRIVATE)
    assert b.bucket_access("shared") == ("alice", PRIVATE)
    a.set_bucket_acl("shared", PUBLIC_READ)  # a change of an existing bucket reaches peers
    assert b.bucket_access("shared") == ("alice", PUBLIC_READ)
    kept = [decode(r) for r in b.snapshot_records()]
    assert [(r.owner, r.acl) for r in kept if isinstance(r, BucketPut)] == [("alice", PUBLIC_READ)]
    c.replicator = _Pushes(c, a)  # c missed every push: it asks the peers for the bucket
    assert c.bucket_access("shared") == ("alice", PUBLIC_READ)
    assert c.bucket_access("never") is None
