"""A signed small request's access check runs in the request's one worker-thread trip (the
store call it makes anyway), or with no trip on the event loop for a small GET the store
answers from memory (``read_cached``) and for a small PUT on a lone connection (``run_inline``),
still before anything is read or changed, and a refused request answers the same S3 error as
when the check had a trip of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.blob import LocalBlobStore
from blocks.blob.s3.handler import ACCESS_DEFERRED_BODY_BYTES_MAX, S3Config
from blocks.blob.server import BlobServer

from .server_thread import running_server

boto3 = pytest.importorskip("boto3")
from botocore import UNSIGNED  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

OWNER, OTHER, ADMIN = "AKIDOWNER", "AKIDOTHER", "AKIDADMIN"
KEYS = {OWNER: "owner-secret-1", OTHER: "other-secret-2", ADMIN: "admin-secret-3"}
BODY = b"x" * 4096


class _Counted:
    """Counts the handler's request-pool submissions and the store calls made, by name."""

    def __init__(self, server: BlobServer, store: LocalBlobStore) -> None:
        self.trips = 0
        self.calls: list[str] = []
        self.store = store
        self.handler = server.handler
        self._lock = threading.Lock()
        pool = server.handler.workers.requests
        submit = pool.submit

        def counted_submit(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.trips += 1
            return submit(function, *args, **kwargs)

        pool.submit = counted_submit  # type: ignore[method-assign]
        for name in ("bucket_access", "put_object", "iter_object", "head_object"):
            setattr(store, name, self._recorded(name, getattr(store, name)))

    def _recorded(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls.append(name)
            return method(*args, **kwargs)

        return call

    def reset(self) -> None:
        with self._lock:
            self.trips = 0
            self.calls = []


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, _Counted]]:
    directory: Path = tmp_path_factory.mktemp("one-trip")
    store = LocalBlobStore(directory / "data", chunk_bytes=1024 * 1024, fsync=False)
    config = S3Config(credentials=KEYS, admins=frozenset({ADMIN}))
    try:
        with running_server(store, config=config) as server:
            yield server.endpoint, _Counted(server, store)
    finally:
        store.close()


def _client(endpoint: str, key: str | None) -> Any:
    extra: dict[str, Any] = {}
    if key is None:
        extra["config"] = Config(
            signature_version=UNSIGNED, s3={"addressing_style": "path"}, retries={"max_attempts": 1}
        )
    else:
        extra["config"] = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
        extra["aws_access_key_id"] = key
        extra["aws_secret_access_key"] = KEYS[key]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **extra)


def _code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    return str(refused.value.response["Error"]["Code"])


def test_signed_get_and_put_make_one_trip_with_the_check_first(
    served: tuple[str, _Counted],
) -> None:
    endpoint, counted = served
    owner, admin = _client(endpoint, OWNER), _client(endpoint, ADMIN)
    owner.create_bucket(Bucket="mine")
    for client in (owner, admin):
        counted.reset()
        client.put_object(Bucket="mine", Key="k", Body=BODY)
        # On a lone connection a small PUT commits on the event loop, else in one trip.
        assert counted.trips == (0 if counted.handler.connections_open == 1 else 1)
        assert counted.calls == ["bucket_access", "put_object"]
        counted.reset()  # a small object the store holds in memory: no trip at all
        assert client.get_object(Bucket="mine", Key="k")["Body"].read() == BODY
        assert counted.trips == 0
        assert counted.calls == ["bucket_access"]
        counted.reset()  # one it must read from its record: one trip
        counted.store._forget_inline()
        assert client.get_object(Bucket="mine", Key="k")["Body"].read() == BODY
        assert counted.trips == 1
        assert counted.calls == ["bucket_access", "iter_object"]
        counted.reset()
        client.head_object(Bucket="mine", Key="k")
        assert counted.trips == 1
        assert counted.calls == ["bucket_access", "head_object"]


def test_refusals_read_and_change_nothing_and_keep_their_order(
    served: tuple[str, _Counted],
) -> None:
    endpoint, counted = served
    owner, other, anonymous = (_client(endpoint, k) for k in (OWNER, OTHER, None))
    owner.create_bucket(Bucket="private-one")
    owner.put_object(Bucket="private-one", Key="k", Body=BODY)
    refusals: list[tuple[Callable[[], Any], str]] = [
        (lambda: other.get_object(Bucket="private-one", Key="k"), "AccessDenied"),
        (lambda: other.put_object(Bucket="private-one", Key="k", Body=b"y"), "AccessDenied"),
        (lambda: other.delete_object(Bucket="private-one", Key="k"), "AccessDenied"),
        (lambda: anonymous.get_object(Bucket="private-one", Key="k"), "AccessDenied"),
        (lambda: anonymous.put_object(Bucket="private-one", Key="k", Body=b"y"), "AccessDenied"),
        # a signed non-admin key naming a missing bucket: NoSuchBucket; anonymous: denied
        (lambda: other.get_object(Bucket="nowhere", Key="k"), "NoSuchBucket"),
        (lambda: anonymous.get_object(Bucket="nowhere", Key="k"), "AccessDenied"),
        # the check comes before what the request would fail on later, as it always did
        (
            lambda: other.put_object(
                Bucket="private-one", Key="k", Body=b"y", ServerSideEncryption="AES256"
            ),
            "AccessDenied",
        ),
        (
            lambda: other.get_object(Bucket="private-one", Key="k", Range="bytes=9-1"),
            "AccessDenied",
        ),
        (lambda: other.get_object_tagging(Bucket="private-one", Key="k"), "AccessDenied"),
        (
            lambda: other.copy_object(
                Bucket="private-one", Key="c", CopySource={"Bucket": "private-one", "Key": "k"}
            ),
            "AccessDenied",
        ),
    ]
    for call, code in refusals:
        counted.reset()
        assert _code(call) == code
        assert set(counted.calls) <= {"bucket_access"}, counted.calls
    # The same requests by the owner get past the check to their own answer.
    assert (
        _code(
            lambda: owner.put_object(
                Bucket="private-one", Key="k", Body=b"y", ServerSideEncryption="AES256"
            )
        )
        == "NotImplemented"
    )
    assert _code(lambda: owner.get_object_tagging(Bucket="private-one", Key="k")) in (
        "NotImplemented"
    )
    assert owner.get_object(Bucket="private-one", Key="k")["Body"].read() == BODY


def test_public_read_and_owner_copies_still_pass(served: tuple[str, _Counted]) -> None:
    endpoint, counted = served
    owner, other, anonymous = (_client(endpoint, k) for k in (OWNER, OTHER, None))
    owner.create_bucket(Bucket="shown", ACL="public-read")
    owner.put_object(Bucket="shown", Key="k", Body=BODY)
    counted.reset()
    assert other.get_object(Bucket="shown", Key="k")["Body"].read() == BODY
    assert counted.trips == 0 and counted.calls == ["bucket_access"]
    assert anonymous.get_object(Bucket="shown", Key="k")["Body"].read() == BODY
    assert _code(lambda: other.put_object(Bucket="shown", Key="k", Body=b"y")) == "AccessDenied"
    # A copy needs READ on its source as well: from a public bucket into one's own, yes;
    # from another's private bucket, no.
    other.create_bucket(Bucket="others")
    other.copy_object(Bucket="others", Key="c", CopySource={"Bucket": "shown", "Key": "k"})
    owner.create_bucket(Bucket="closed")
    owner.put_object(Bucket="closed", Key="k", Body=BODY)
    copy = {"Bucket": "closed", "Key": "k"}
    assert _code(lambda: other.copy_object(Bucket="others", Key="d", CopySource=copy)) == (
        "AccessDenied"
    )


def test_a_larger_body_waits_for_the_check_before_it_is_read(
    served: tuple[str, _Counted],
) -> None:
    endpoint, counted = served
    owner, other = _client(endpoint, OWNER), _client(endpoint, OTHER)
    owner.create_bucket(Bucket="large-bodies")
    large = b"z" * (ACCESS_DEFERRED_BODY_BYTES_MAX + 1)
    counted.reset()
    assert _code(lambda: other.put_object(Bucket="large-bodies", Key="k", Body=large)) == (
        "AccessDenied"
    )
    assert (counted.trips, counted.calls) == (1, ["bucket_access"])
    counted.reset()
    owner.put_object(Bucket="large-bodies", Key="k", Body=large)
    assert (counted.trips, counted.calls) == (2, ["bucket_access", "put_object"])
    # A small body that fails to parse still answers the refusal first.
    upload = owner.create_multipart_upload(Bucket="large-bodies", Key="m")["UploadId"]
    counted.reset()
    assert (
        _code(
            lambda: other.complete_multipart_upload(
                Bucket="large-bodies", Key="m", UploadId=upload, MultipartUpload={"Parts": []}
            )
        )
        == "AccessDenied"
    )
    assert set(counted.calls) == {"bucket_access"}
    owners_code = _code(
        lambda: owner.complete_multipart_upload(
            Bucket="large-bodies", Key="m", UploadId=upload, MultipartUpload={"Parts": []}
        )
    )
    assert owners_code not in ("AccessDenied", "NoSuchBucket")
