"""boto3 on one reused client against one server: the S3 semantics issue #15 found wrong
(subresources, conditionals, encryption requests, multipart bookkeeping, metadata
signatures, presigned URLs) and invalid keys (#14)."""

from __future__ import annotations

import base64
import datetime
import email.header
import hashlib
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.blob import LocalBlobStore
from blocks.blob.s3.handler import S3Config

from .server_thread import running_server

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

ACCESS, SECRET = "AKIDSEMANTICS", "semantics/secret+key"
PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    root: Path = tmp_path_factory.mktemp("semantics")
    store = LocalBlobStore(root, chunk_bytes=1024 * 1024, fsync=False)
    config = S3Config(credentials={ACCESS: SECRET})
    with running_server(store, config=config) as server:
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                signature_version="s3v4",
            ),
        )
        yield client, server
    store.close()


@pytest.fixture
def bucket(s3: tuple[Any, Any], request: pytest.FixtureRequest) -> str:
    client, _ = s3
    name = request.node.name.replace("_", "-")[:40].strip("-").lower()
    client.create_bucket(Bucket=name)
    return name


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def _status(error: pytest.ExceptionInfo[ClientError]) -> int:
    return int(error.value.response["ResponseMetadata"]["HTTPStatusCode"])


def _body(client: Any, bucket: str, key: str) -> bytes:
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_a_key_with_nul_is_an_invalid_argument(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    with pytest.raises(ClientError) as error:
        client.put_object(Bucket=bucket, Key="a\x00b", Body=b"x")
    assert (_status(error), _code(error)) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as error:
        client.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert _code(error) == "KeyTooLongError"


def test_delete_object_tagging_does_not_delete_the_object(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    client.put_object(Bucket=bucket, Key="k", Body=b"keep me")
    with pytest.raises(ClientError) as error:
        client.delete_object_tagging(Bucket=bucket, Key="k")
    assert (_status(error), _code(error)) == (501, "NotImplemented")
    with pytest.raises(ClientError) as error:  # no version id of ours: S3's answer
        client.delete_object(Bucket=bucket, Key="k", VersionId="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd")
    assert (_status(error), _code(error)) == (400, "InvalidArgument")
    client.delete_object(Bucket=bucket, Key="k", VersionId="0" * 32)  # no such version
    assert _body(client, bucket, "k") == b"keep me"
    client.delete_object(Bucket=bucket, Key="k", VersionId="null")  # the only version
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_get_subresources_never_return_the_object_bytes(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    client.put_object(Bucket=bucket, Key="k", Body=b"secret bytes")
    for call in (client.get_object_acl, client.get_object_tagging):
        with pytest.raises(ClientError) as error:
            call(Bucket=bucket, Key="k")
        assert (_status(error), _code(error)) == (501, "NotImplemented")
    attributes = client.get_object_attributes(
        Bucket=bucket, Key="k", ObjectAttributes=["ETag", "ObjectSize", "StorageClass"]
    )
    assert attributes["ETag"] == hashlib.md5(b"secret bytes").hexdigest()
    assert attributes["ObjectSize"] == len(b"secret bytes")
    assert attributes["StorageClass"] == "STANDARD"
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"p" * 100)
    client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=3, Body=b"q" * 10)
    parts = client.list_parts(Bucket=bucket, Key="k", UploadId=upload)
    assert [(p["PartNumber"], p["Size"]) for p in parts["Parts"]] == [(1, 100), (3, 10)]
    assert parts["Parts"][0]["ETag"] == f'"{hashlib.md5(b"p" * 100).hexdigest()}"'
    client.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload)
    with pytest.raises(ClientError) as error:
        client.list_parts(Bucket=bucket, Key="k", UploadId=upload)
    assert _code(error) == "NoSuchUpload"
    assert _body(client, bucket, "k") == b"secret bytes"


def test_conditional_writes(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    first = client.put_object(Bucket=bucket, Key="k", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as error:
        client.put_object(Bucket=bucket, Key="k", Body=b"two", IfNoneMatch="*")
    assert (_status(error), _code(error)) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as error:
        client.put_object(Bucket=bucket, Key="k", Body=b"two", IfMatch='"0123"')
    assert (_status(error), _code(error)) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as error:
        client.put_object(Bucket=bucket, Key="absent", Body=b"two", IfMatch=first["ETag"])
    assert _code(error) == "NoSuchKey"
    assert _body(client, bucket, "k") == b"one"
    client.put_object(Bucket=bucket, Key="k", Body=b"three", IfMatch=first["ETag"])
    assert _body(client, bucket, "k") == b"three"
    large = b"L" * (2 * 1024 * 1024)  # a streamed body: refused before it is stored
    with pytest.raises(ClientError) as error:
        client.put_object(Bucket=bucket, Key="k", Body=large, IfNoneMatch="*")
    assert _code(error) == "PreconditionFailed"
    assert _body(client, bucket, "k") == b"three"


def test_conditional_reads(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    etag = client.put_object(Bucket=bucket, Key="k", Body=b"data")["ETag"]
    modified = client.head_object(Bucket=bucket, Key="k")["LastModified"]
    past = modified - datetime.timedelta(days=1)
    future = modified + datetime.timedelta(days=1)
    for call in (client.get_object, client.head_object):
        for condition, status in (
            ({"IfMatch": '"0123"'}, 412),
            ({"IfNoneMatch": etag}, 304),
            ({"IfModifiedSince": future}, 304),
            ({"IfUnmodifiedSince": past}, 412),
        ):
            with pytest.raises(ClientError) as error:
                call(Bucket=bucket, Key="k", **condition)
            assert _status(error) == status, (call, condition)
        for condition in (
            {"IfMatch": etag},
            {"IfNoneMatch": '"0123"'},
            {"IfModifiedSince": past},
            {"IfUnmodifiedSince": future},
            {"IfMatch": etag, "IfUnmodifiedSince": past},  # If-Match wins, as RFC 9110 says
        ):
            assert call(Bucket=bucket, Key="k", **condition)["ETag"] == etag
    with pytest.raises(ClientError) as error:  # If-None-Match wins over If-Modified-Since
        client.get_object(Bucket=bucket, Key="k", IfNoneMatch=etag, IfModifiedSince=past)
    assert _status(error) == 304


def test_encryption_requests_are_not_implemented(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    for extra in (
        {"ServerSideEncryption": "AES256"},
        {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "some-key"},
        {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32},
    ):
        with pytest.raises(ClientError) as error:
            client.put_object(Bucket=bucket, Key="k", Body=b"plain", **extra)
        assert (_status(error), _code(error)) == (501, "NotImplemented"), extra
        with pytest.raises(ClientError) as error:
            client.create_multipart_upload(Bucket=bucket, Key="k", **extra)
        assert _code(error) == "NotImplemented"
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)


def test_uploads_are_listed_and_an_abort_frees_the_bucket(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    first = client.create_multipart_upload(Bucket=bucket, Key="a/one")["UploadId"]
    second = client.create_multipart_upload(Bucket=bucket, Key="b/two")["UploadId"]
    listed = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("a/one", first), ("b/two", second)]
    assert [
        u["Key"] for u in client.list_multipart_uploads(Bucket=bucket, Prefix="b/")["Uploads"]
    ] == ["b/two"]
    with pytest.raises(ClientError) as error:
        client.delete_bucket(Bucket=bucket)
    assert _code(error) == "BucketNotEmpty"
    client.abort_multipart_upload(Bucket=bucket, Key="a/one", UploadId=first)
    client.abort_multipart_upload(Bucket=bucket, Key="b/two", UploadId=second)
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)
    client.delete_bucket(Bucket=bucket)


def test_non_ascii_metadata_round_trips(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3

    # botocore refuses non-ASCII metadata parameters; other clients send the UTF-8 bytes.
    def add_header(request: Any, **_: Any) -> None:
        request.headers["x-amz-meta-name"] = "café ☕"

    client.meta.events.register("before-sign.s3.PutObject", add_header)
    try:
        client.put_object(Bucket=bucket, Key="k", Body=b"x")
    finally:
        client.meta.events.unregister("before-sign.s3.PutObject", add_header)
    value = client.head_object(Bucket=bucket, Key="k")["Metadata"]["name"]
    [(decoded, charset)] = email.header.decode_header(value)  # RFC 2047, as S3 answers
    assert (decoded, charset) == ("café ☕".encode(), "utf-8")


def test_presigned_urls_work_with_plain_http(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    put_url = client.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "shared.bin"}, ExpiresIn=300
    )
    assert "X-Amz-Expires=300" in put_url
    request = urllib.request.Request(put_url, data=b"via a presigned PUT", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    get_url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared.bin"}, ExpiresIn=300
    )
    with urllib.request.urlopen(get_url, timeout=30) as response:
        assert response.read() == b"via a presigned PUT"
    tampered = get_url.replace("shared.bin", "other.bin")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tampered, timeout=30)
    assert refused.value.code == 403 and b"SignatureDoesNotMatch" in refused.value.read()


def test_presigned_urls_of_boto3_default_signer(s3: tuple[Any, Any], bucket: str) -> None:
    client, server = s3
    client.put_object(Bucket=bucket, Key="dir/a file+1.bin", Body=b"sigv2 bytes")
    default = boto3.client(  # boto3's default presigner signs query strings with SigV2
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    url = default.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "dir/a file+1.bin"}, ExpiresIn=300
    )
    assert "AWSAccessKeyId=" in url and "Expires=" in url
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == b"sigv2 bytes"
    expired = default.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "dir/a file+1.bin"}, ExpiresIn=-3600
    )
    for refused_url in (url.replace("dir/a", "dir/b"), expired):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(refused_url, timeout=30)
        assert refused.value.code == 403


def test_delete_objects_in_one_request(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    for key in ("a", "b", "c"):
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    result = client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "missing"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "b", "missing"]
    assert "Errors" not in result
    quiet = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c"}], "Quiet": True})
    assert "Deleted" not in quiet
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_copy_object(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    large = bytes(range(256)) * (12 * 1024)  # three chunks
    source = {"Bucket": bucket, "Key": "dir/sõurce file"}
    etag = client.put_object(
        **source, Body=large, ContentType="video/mp4", Metadata={"origin": "camera"}
    )["ETag"]
    copied = client.copy_object(CopySource=source, Bucket=bucket, Key="copy")
    assert copied["CopyObjectResult"]["ETag"] == etag
    head = client.head_object(Bucket=bucket, Key="copy")
    assert (head["ContentType"], head["Metadata"]) == ("video/mp4", {"origin": "camera"})
    assert _body(client, bucket, "copy") == large
    client.copy_object(
        CopySource=source,
        Bucket=bucket,
        Key="replaced",
        MetadataDirective="REPLACE",
        Metadata={"origin": "edit"},
        ContentType="text/plain",
    )
    head = client.head_object(Bucket=bucket, Key="replaced")
    assert (head["ContentType"], head["Metadata"]) == ("text/plain", {"origin": "edit"})
    with pytest.raises(ClientError) as error:
        client.copy_object(CopySource=source, Bucket=bucket, Key="x", CopySourceIfMatch='"0"')
    assert (_status(error), _code(error)) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as error:
        client.copy_object(CopySource=source, Bucket=bucket, Key="x", CopySourceIfNoneMatch=etag)
    assert _status(error) == 412
    with pytest.raises(ClientError) as error:  # onto itself without a change
        client.copy_object(CopySource=source, **source)
    assert _code(error) == "InvalidRequest"
    with pytest.raises(ClientError) as error:
        client.copy_object(CopySource={"Bucket": bucket, "Key": "nope"}, Bucket=bucket, Key="x")
    assert _code(error) == "NoSuchKey"
    assert _body(client, bucket, source["Key"]) == large


def test_list_objects_v1_with_markers(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    keys = ["a/1", "a/2", "b", "c/1", "d"]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    first = client.list_objects(Bucket=bucket, MaxKeys=2)
    assert [o["Key"] for o in first["Contents"]] == ["a/1", "a/2"] and first["IsTruncated"]
    second = client.list_objects(Bucket=bucket, MaxKeys=2, Marker="a/2")
    assert [o["Key"] for o in second["Contents"]] == ["b", "c/1"]
    grouped = client.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2)
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["a/"]
    assert [o["Key"] for o in grouped["Contents"]] == ["b"]
    assert grouped["IsTruncated"] and grouped["NextMarker"] == "b"
    pages = client.get_paginator("list_objects").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}
    )
    assert [o["Key"] for page in pages for o in page["Contents"]] == keys


def test_checksums_are_stored_and_returned(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    small, large = b"checked bytes", bytes(range(256)) * 8192  # read whole, streamed
    for key, data in (("small", small), ("large", large)):
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        put = client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="CRC32")
        assert put["ChecksumCRC32"] == crc
        got = client.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert got["ChecksumCRC32"] == crc  # and boto3 checked the body against it
        assert got["Body"].read() == data
        assert (
            client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")["ChecksumCRC32"]
            == crc
        )
    sha = base64.b64encode(hashlib.sha256(small).digest()).decode()
    client.put_object(Bucket=bucket, Key="sha", Body=small, ChecksumAlgorithm="SHA256")
    assert (
        client.head_object(Bucket=bucket, Key="sha", ChecksumMode="ENABLED")["ChecksumSHA256"]
        == sha
    )
    ranged = client.get_object(Bucket=bucket, Key="sha", Range="bytes=0-3", ChecksumMode="ENABLED")
    assert "ChecksumSHA256" not in ranged  # a part of the object has no whole checksum


def test_checksums_survive_a_reopen(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, fsync=False)
    store.create_bucket("bkt")
    store.put_object("bkt", "k", b"x" * 100_000, checksums={"crc32": "AAAAAA=="})
    store.put_object("bkt", "plain", b"y")
    store.close()
    reopened = LocalBlobStore(tmp_path, fsync=False)
    assert reopened.head_object("bkt", "k").checksums == {"crc32": "AAAAAA=="}
    assert reopened.head_object("bkt", "plain").checksums == {}
    reopened.close()


def test_standard_headers_are_stored_and_overridable(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    client.put_object(
        Bucket=bucket,
        Key="page.html",
        Body=b"<p>hi</p>",
        ContentType="text/html",
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="page.html"',
        ContentEncoding="identity",
        ContentLanguage="en",
        Expires=datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    )
    head = client.head_object(Bucket=bucket, Key="page.html")
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="page.html"'
    assert (head["ContentEncoding"], head["ContentLanguage"]) == ("identity", "en")
    assert head["ExpiresString"] == "Wed, 02 Jan 2030 03:04:05 GMT"
    got = client.get_object(
        Bucket=bucket,
        Key="page.html",
        ResponseContentType="text/plain",
        ResponseCacheControl="no-cache",
    )
    assert (got["ContentType"], got["CacheControl"]) == ("text/plain", "no-cache")
    assert got["ContentLanguage"] == "en"
    copied = client.copy_object(
        CopySource={"Bucket": bucket, "Key": "page.html"}, Bucket=bucket, Key="copy.html"
    )
    assert copied["CopyObjectResult"]["ETag"]
    assert client.head_object(Bucket=bucket, Key="copy.html")["CacheControl"] == "max-age=60"


def test_upload_part_copy(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    source = bytes(range(256)) * (24 * 1024)  # 6 MiB
    client.put_object(Bucket=bucket, Key="src", Body=source)
    upload = client.create_multipart_upload(Bucket=bucket, Key="joined")["UploadId"]
    first = client.upload_part_copy(
        Bucket=bucket,
        Key="joined",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes=0-{PART - 1}",
    )["CopyPartResult"]["ETag"]
    second = client.upload_part_copy(
        Bucket=bucket,
        Key="joined",
        UploadId=upload,
        PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "src"},
    )["CopyPartResult"]["ETag"]
    assert first == f'"{hashlib.md5(source[:PART]).hexdigest()}"'
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="joined",
        UploadId=upload,
        MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]
        },
    )
    assert _body(client, bucket, "joined") == source[:PART] + source


def test_get_and_head_by_part_number(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    parts_data = [b"a" * PART, b"b" * PART, b"c" * 1000]
    upload = client.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etags = [
        client.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n + 1, Body=data)[
            "ETag"
        ]
        for n, data in enumerate(parts_data)
    ]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]},
    )
    second = client.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert second["Body"].read() == parts_data[1]
    assert second["PartsCount"] == 3
    assert second["ContentRange"] == f"bytes {PART}-{2 * PART - 1}/{2 * PART + 1000}"
    head = client.head_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert head["ContentLength"] == 1000 and head["PartsCount"] == 3
    with pytest.raises(ClientError) as error:
        client.get_object(Bucket=bucket, Key="mp", PartNumber=4)
    assert _code(error) == "InvalidPartNumber"
    client.put_object(Bucket=bucket, Key="single", Body=b"whole")
    assert client.get_object(Bucket=bucket, Key="single", PartNumber=1)["Body"].read() == b"whole"


@pytest.mark.parametrize(
    "name",
    ["xn--punycode", "sthree-bucket", "bucket-s3alias", "bucket--ol-s3", "bucket--x-s3", "a..b"],
)
def test_reserved_bucket_names_are_refused(s3: tuple[Any, Any], name: str) -> None:
    client, _ = s3
    with pytest.raises(ClientError) as error:
        client.create_bucket(Bucket=name)
    assert _code(error) == "InvalidBucketName"


def test_list_buckets_with_prefix_and_pages(s3: tuple[Any, Any]) -> None:
    client, _ = s3
    for name in ("paged-a", "paged-b", "paged-c"):
        client.create_bucket(Bucket=name)
    first = client.list_buckets(Prefix="paged-", MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == ["paged-a", "paged-b"]
    assert first["Prefix"] == "paged-"
    rest = client.list_buckets(
        Prefix="paged-", MaxBuckets=2, ContinuationToken=first["ContinuationToken"]
    )
    assert [b["Name"] for b in rest["Buckets"]] == ["paged-c"]
    assert "ContinuationToken" not in rest


def test_multipart_uploads_keep_standard_headers(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    upload = client.create_multipart_upload(
        Bucket=bucket, Key="mp", CacheControl="no-store", ContentLanguage="fr"
    )["UploadId"]
    etag = client.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"z")[
        "ETag"
    ]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    head = client.head_object(Bucket=bucket, Key="mp")
    assert (head["CacheControl"], head["ContentLanguage"]) == ("no-store", "fr")


def test_conditional_complete_multipart_upload(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    client.put_object(Bucket=bucket, Key="taken", Body=b"first")
    upload = client.create_multipart_upload(Bucket=bucket, Key="taken")["UploadId"]
    etag = client.upload_part(
        Bucket=bucket, Key="taken", UploadId=upload, PartNumber=1, Body=b"second"
    )["ETag"]
    with pytest.raises(ClientError) as error:
        client.complete_multipart_upload(
            Bucket=bucket,
            Key="taken",
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
            IfNoneMatch="*",
        )
    assert _code(error) == "PreconditionFailed"
    assert _body(client, bucket, "taken") == b"first"
    assert [
        p["PartNumber"]
        for p in client.list_parts(Bucket=bucket, Key="taken", UploadId=upload)["Parts"]
    ] == [1]


def test_listings_name_the_owner(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert "Owner" not in client.list_objects_v2(Bucket=bucket)["Contents"][0]
    owned = client.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]
    assert owned["Owner"]["ID"] == client.list_buckets()["Owner"]["ID"]
    assert client.list_objects(Bucket=bucket)["Contents"][0]["Owner"] == owned["Owner"]


def test_an_unversioned_bucket_lists_null_versions(s3: tuple[Any, Any], bucket: str) -> None:
    client, _ = s3
    for key in ("a", "b", "c"):
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert "Status" not in client.get_bucket_versioning(Bucket=bucket)
    first = client.list_object_versions(Bucket=bucket, MaxKeys=2)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in first["Versions"]] == [
        ("a", "null", True),
        ("b", "null", True),
    ]
    assert first["IsTruncated"] and first["NextKeyMarker"] == "b"
    rest = client.list_object_versions(Bucket=bucket, MaxKeys=2, KeyMarker="b")
    assert [v["Key"] for v in rest["Versions"]] == ["c"] and not rest["IsTruncated"]
    assert (
        "x-amz-version-id"
        not in client.head_object(Bucket=bucket, Key="a")["ResponseMetadata"]["HTTPHeaders"]
    )
