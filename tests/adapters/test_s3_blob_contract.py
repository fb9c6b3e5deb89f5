"""The blob contract against ``S3BlobStore`` on two real S3 servers: our own ``blocks blob
serve`` process and moto's S3 server process; then the semantic differences found, each as a
test. Every contract example starts from an empty store (``empty_store``).

Capabilities: on our server the adapter claims every property, ``restart`` included (the
rule restarts the server process on its data directory under the same adapter); moto keeps
everything in memory, so there it does not claim ``restart``. Part sizes: our server keeps
S3's 5 MiB minimum, so the contract's small multi-part uploads are refused there
(``InvalidArgument``, the upload stays open) and complete on moto (minimum lowered to 200).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import settings

from blocks.blob.api import BlobStore
from blocks.blob.contract import BlobStoreContract
from blocks.core.errors import Conflict, InvalidArgument, NotFound
from blocks.testing import ProcessCluster
from blocks.testing.servers import BLOB_ACCESS_KEY, BLOB_SECRET_KEY, blob_spec

pytest.importorskip("boto3")
from blocks.blob.adapters.s3 import PROPERTIES, S3BlobStore
from tests.adapters.s3_servers import (
    MOTO_ACCESS_KEY,
    MOTO_PART_BYTES_MIN,
    MOTO_SECRET_KEY,
    MotoServer,
    empty_store,
    moto_missing,
)

pytestmark = pytest.mark.process
OUR_PART_BYTES_MIN = 5 * 1024 * 1024
EXAMPLES = settings(settings.default, max_examples=5, stateful_step_count=20, deadline=None)
# Each restart step restarts the server process (a second or more): fewer, shorter runs.
RESTARTING_EXAMPLES = settings(EXAMPLES, max_examples=3, stateful_step_count=10)


class Target:
    """Where a contract's adapters connect, and how to restart the store (if it can)."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str) -> None:
        self.endpoint, self.access_key, self.secret_key = endpoint, access_key, secret_key
        self.cluster: ProcessCluster | None = None

    def store(self) -> S3BlobStore:
        """A new adapter; its client comes from one session (loading boto3's service
        models once per session is what makes a client slow to build)."""
        return S3BlobStore(client=_raw(self))


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("s3-adapter")
    with ProcessCluster(blob_spec(fsync=False), ["s3"], root / "server") as cluster:
        cluster.start_all()
        target = Target(f"http://{cluster.address('s3')}", BLOB_ACCESS_KEY, BLOB_SECRET_KEY)
        target.cluster = cluster
        with cluster.failure_notes("S3BlobStore against one blocks blob node"):
            yield target


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    reason = moto_missing()
    if reason is not None:
        pytest.skip(reason)
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield Target(server.endpoint, MOTO_ACCESS_KEY, MOTO_SECRET_KEY)


class S3Contract(BlobStoreContract):
    target: ClassVar[Target | None] = None

    def make_subject(self) -> BlobStore:
        assert self.target is not None
        store = self.target.store()
        empty_store(store)
        return store


class OursContract(S3Contract):
    declared_properties = PROPERTIES | {"restart"}
    part_bytes_min = OUR_PART_BYTES_MIN
    supports_restart = True

    def restart_subject(self, store: BlobStore) -> BlobStore:
        """Restart the server on its data directory; the same adapter goes on (its
        connections are dropped and opened again)."""
        assert self.target is not None and self.target.cluster is not None
        self.target.cluster.restart("s3")  # waits until it answers ListBuckets again
        return store


class MotoContract(S3Contract):
    declared_properties = PROPERTIES
    part_bytes_min = MOTO_PART_BYTES_MIN


@pytest.fixture
def _on_ours(ours: Target) -> None:
    OursContract.target = ours


@pytest.fixture
def _on_moto(moto: Target) -> None:
    MotoContract.target = moto


TestOursContract = pytest.mark.usefixtures("_on_ours")(OursContract.TestCase)
TestOursContract.settings = RESTARTING_EXAMPLES
TestMotoContract = pytest.mark.usefixtures("_on_moto")(MotoContract.TestCase)
TestMotoContract.settings = EXAMPLES


def test_capabilities_are_declared() -> None:
    assert OursContract.skipped_properties() == ()
    assert MotoContract.skipped_properties() == ("restart",)


# -- semantic differences (docs/adapters.md, "blob on S3") ---------------------------------


@functools.cache
def _session() -> Any:
    import boto3

    return boto3.session.Session()


def _raw(target: Target) -> Any:
    """A plain boto3 client of ``target``, one attempt per request (a wrong answer fails
    instead of being retried away): what the store itself answers."""
    from botocore.config import Config

    return _session().client(
        "s3",
        endpoint_url=target.endpoint,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture
def fresh_moto(moto: Target) -> Iterator[S3BlobStore]:
    store = moto.store()
    empty_store(store)
    yield store
    empty_store(store)
    store.close()


@pytest.fixture
def fresh_ours(ours: Target) -> Iterator[S3BlobStore]:
    store = ours.store()
    empty_store(store)
    yield store
    empty_store(store)
    store.close()


def test_moto_creates_an_existing_bucket_again_the_adapter_refuses(
    moto: Target, fresh_moto: S3BlobStore
) -> None:
    raw = _raw(moto)
    raw.create_bucket(Bucket="twice")
    raw.create_bucket(Bucket="twice")  # us-east-1: 200 for a bucket its caller owns
    with pytest.raises(Conflict):
        fresh_moto.create_bucket("twice")


def test_moto_deletes_a_bucket_with_an_upload_in_progress_ours_refuses(
    moto: Target, ours: Target, fresh_moto: S3BlobStore, fresh_ours: S3BlobStore
) -> None:
    for store, target, engine_refuses in ((fresh_moto, moto, False), (fresh_ours, ours, True)):
        store.create_bucket("busy")
        store.create_multipart_upload("busy", "k")
        with pytest.raises(Conflict):
            store.delete_bucket("busy")  # the adapter lists uploads first, on both
        try:
            _raw(target).delete_bucket(Bucket="busy")
            deleted = True
        except Exception as error:  # botocore's ClientError: BucketNotEmpty
            assert "BucketNotEmpty" in str(error)
            deleted = False
        assert deleted != engine_refuses
        assert [b.name for b in store.list_buckets()] == ([] if deleted else ["busy"])


def test_moto_keeps_a_wrong_checksum_ours_refuses_it(
    fresh_moto: S3BlobStore, fresh_ours: S3BlobStore
) -> None:
    wrong = {"crc32": "AAAAAA=="}  # the CRC-32 of b"y" is something else
    fresh_ours.create_bucket("sums")
    with pytest.raises(InvalidArgument):  # BadDigest
        fresh_ours.put_object("sums", "k", b"y", checksums=wrong)
    with pytest.raises(NotFound):
        fresh_ours.head_object("sums", "k")
    fresh_moto.create_bucket("sums")
    fresh_moto.put_object("sums", "k", b"y", checksums=wrong)
    assert fresh_moto.get_object("sums", "k")[1] == b"y"


def test_default_content_types_differ_the_adapter_always_sends_one(
    moto: Target, ours: Target, fresh_moto: S3BlobStore, fresh_ours: S3BlobStore
) -> None:
    defaults = {}
    for name, store, target in (("moto", fresh_moto, moto), ("ours", fresh_ours, ours)):
        store.create_bucket("types")
        _raw(target).put_object(Bucket="types", Key="raw", Body=b"x")
        defaults[name] = store.head_object("types", "raw").content_type
        store.put_object("types", "adapted", b"x", content_type="")
        assert store.head_object("types", "adapted").content_type == "application/octet-stream"
    assert defaults == {"moto": "binary/octet-stream", "ours": "application/octet-stream"}


def test_moto_reports_a_fixed_upload_start_time(
    fresh_moto: S3BlobStore, fresh_ours: S3BlobStore
) -> None:
    started = {}
    for name, store in (("moto", fresh_moto), ("ours", fresh_ours)):
        store.create_bucket("uploads")
        store.create_multipart_upload("uploads", "k")
        (upload,) = store.list_multipart_uploads("uploads")
        started[name] = upload.initiated_ms
    year_2020_ms = 1_577_836_800_000
    assert started["moto"] < year_2020_ms < started["ours"]


def test_delete_reports_whether_the_object_existed(fresh_ours: S3BlobStore) -> None:
    """S3 answers 204 to both deletes; the adapter's HEAD before the DELETE tells them apart."""
    fresh_ours.create_bucket("gone")
    fresh_ours.put_object("gone", "k", b"x")
    assert fresh_ours.delete_object("gone", "k") is True
    assert fresh_ours.delete_object("gone", "k") is False


def test_conditions_checksums_and_headers_reach_the_store(fresh_ours: S3BlobStore) -> None:
    from blocks.blob.conditions import ConditionFailed, WriteCondition

    store = fresh_ours
    store.create_bucket("extras")
    data = b"kept with its headers"
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    headers = {"cache-control": "max-age=5", "expires": "Wed, 21 Oct 2015 07:28:00 GMT"}
    first = store.put_object(
        "extras", "k", data, condition=WriteCondition(if_none_match=True),
        checksums={"crc32": crc}, headers=headers,
    )  # fmt: skip
    assert first.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    info = store.head_object("extras", "k")
    assert info.checksums == {"crc32": crc} and dict(info.headers) == headers
    with pytest.raises(ConditionFailed):
        store.put_object("extras", "k", b"x", condition=WriteCondition(if_none_match=True))
    with pytest.raises(ConditionFailed):
        store.put_object("extras", "k", b"x", condition=WriteCondition(if_match="0" * 32))
    with pytest.raises(NotFound):
        store.put_object("extras", "new", b"x", condition=WriteCondition(if_match=first.etag))
    store.put_object("extras", "k", [b"x", b"y"], condition=WriteCondition(if_match=first.etag))
    assert store.get_object("extras", "k")[1] == b"xy"


def test_errors_are_the_blocks_own(tmp_path: Path) -> None:
    from blocks.core.errors import BlocksError, FailedPrecondition, Unavailable
    from blocks.testing.ports import free_ports

    nobody = S3BlobStore(
        f"http://127.0.0.1:{free_ports(1)[0]}", access_key="a", secret_key="b", max_attempts=1
    )
    with pytest.raises(Unavailable):
        nobody.list_buckets()
    with pytest.raises(InvalidArgument):
        nobody.put_object("ok-bucket", "k", b"x", metadata={"bad name!": "v"})
    nobody.close()
    nobody.close()
    with pytest.raises(FailedPrecondition):
        nobody.list_buckets()
    assert issubclass(Unavailable, BlocksError)


def test_s3_sized_parts_and_streamed_reads_on_ours(fresh_ours: S3BlobStore) -> None:
    """What the contract cannot reach on our server: a completion of S3-sized parts (5 MiB
    minimum), and an object read in more than one piece, whole and across the part line."""
    store = fresh_ours
    store.create_bucket("large")
    first, last = bytes(range(256)) * (OUR_PART_BYTES_MIN // 256), b"tail" * 100
    upload = store.create_multipart_upload("large", "joined", metadata={"kind": "parts"})
    one = store.upload_part("large", "joined", upload, 1, [first[:1000], first[1000:]])
    two = store.upload_part("large", "joined", upload, 2, last)
    assert [p.number for p in store.list_parts("large", "joined", upload)] == [1, 2]
    info = store.complete_multipart_upload(
        "large", "joined", upload, [(1, one.etag), (2, two.etag)]
    )
    assert info.parts_count == 2 and info.etag.endswith("-2") and info.size == len(first + last)
    assert store.list_multipart_uploads("large") == []
    head, pieces = store.iter_object("large", "joined")
    received = [bytes(piece) for piece in pieces]
    assert len(received) > 1 and b"".join(received) == first + last
    assert dict(head.metadata) == {"kind": "parts"}
    edge = len(first)
    assert (
        store.get_object("large", "joined", (edge - 3, edge + 2))[1]
        == (first + last)[edge - 3 : edge + 3]
    )
    with pytest.raises(InvalidArgument):  # parts out of order: refused unsent
        store.complete_multipart_upload("large", "joined", "any", [(2, "a"), (1, "b")])
