"""S3 object versioning through boto3, unchanged, against one ``blocks blob serve`` process
on one reused client: the bucket's status, version ids on every write, reads and deletes of
one version, delete markers (404 with ``x-amz-delete-marker``, 405 when named), suspended
buckets writing the ``null`` version, ListObjectVersions with markers, prefixes and a
delimiter, DeleteObjects and CopyObject of versions, and a bucket with versions that is not
empty. AWS's documented behaviour is the reference."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

pytestmark = pytest.mark.process
ACCESS, SECRET = "AKIDVERSIONS", "versions-secret"
PART = 5 * 1024 * 1024
STOP_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [
        sys.executable, "-m", "blocks", "blob", "serve", "--data-dir",
        str(tmp_path_factory.mktemp("versions")), "--listen", f"127.0.0.1:{port}",
        "--no-fsync", "--access-key", ACCESS, "--secret-key", SECRET, "--chunk-kib", "1024",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving S3" in line, line
        yield boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> str:
    name = request.node.name.replace("_", "-")[:40].strip("-").lower()
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def _error(error: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, dict[str, str]]:
    response = error.value.response
    meta = response["ResponseMetadata"]
    return int(meta["HTTPStatusCode"]), str(response["Error"]["Code"]), meta["HTTPHeaders"]


def _body(s3: Any, bucket: str, key: str, **version: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key, **version)["Body"].read())


def _listed(s3: Any, bucket: str, **options: Any) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, delete marker) of one ListObjectVersions page in the
    order the server wrote them (botocore splits versions from markers, so the document
    itself is read: the order is part of what is checked)."""
    bodies: list[bytes] = []

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        bodies.append(response_dict["body"])

    s3.meta.events.register("before-parse.s3.ListObjectVersions", keep)
    try:
        s3.list_object_versions(Bucket=bucket, **options)
    finally:
        s3.meta.events.unregister("before-parse.s3.ListObjectVersions", keep)
    entries = []
    for element in ElementTree.fromstring(bodies[-1]):
        kind = element.tag.rpartition("}")[2]
        if kind in ("Version", "DeleteMarker"):
            fields = {child.tag.rpartition("}")[2]: child.text for child in element}
            latest = fields["IsLatest"] == "true"
            entries.append((fields["Key"], fields["VersionId"], latest, kind == "DeleteMarker"))
    return entries


def test_a_bucket_never_versioned_reports_no_status(s3: Any) -> None:
    s3.create_bucket(Bucket="plain")
    assert "Status" not in s3.get_bucket_versioning(Bucket="plain")
    reply = s3.put_object(Bucket="plain", Key="k", Body=b"x")
    assert "VersionId" not in reply
    s3.put_bucket_versioning(Bucket="plain", VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket="plain")["Status"] == "Suspended"
    assert s3.head_object(Bucket="plain", Key="k")["VersionId"] == "null"
    with pytest.raises(ClientError) as error:
        s3.get_bucket_versioning(Bucket="no-such-bucket")
    assert _error(error)[:2] == (404, "NoSuchBucket")


def test_versions_reads_and_permanent_deletes(s3: Any, bucket: str) -> None:
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"two")["VersionId"]
    assert first != second and "null" not in (first, second)
    assert _body(s3, bucket, "k") == b"two"
    assert _body(s3, bucket, "k", VersionId=first) == b"one"
    head = s3.head_object(Bucket=bucket, Key="k", VersionId=first)
    assert (head["VersionId"], head["ContentLength"]) == (first, 3)
    assert s3.get_object(Bucket=bucket, Key="k")["VersionId"] == second
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="k", VersionId="0" * 32)
    assert _error(error)[:2] == (404, "NoSuchVersion")
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="k", VersionId="not-ours")
    assert _error(error)[:2] == (400, "InvalidArgument")
    deleted = s3.delete_object(Bucket=bucket, Key="k", VersionId=second)  # gone for good
    assert deleted["VersionId"] == second and "DeleteMarker" not in deleted
    assert _body(s3, bucket, "k") == b"one"  # the older one is current again
    assert _listed(s3, bucket) == [("k", first, True, False)]


def test_delete_markers(s3: Any, bucket: str) -> None:
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    marker = deleted["VersionId"]
    assert deleted["DeleteMarker"] is True and marker != first
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="k")
    status, code, headers = _error(error)
    assert (status, code) == (404, "NoSuchKey")
    assert (headers["x-amz-delete-marker"], headers["x-amz-version-id"]) == ("true", marker)
    with pytest.raises(ClientError) as error:
        s3.head_object(Bucket=bucket, Key="k")
    assert _error(error)[0] == 404
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="k", VersionId=marker)
    status, code, headers = _error(error)
    assert (status, code, headers["x-amz-delete-marker"]) == (405, "MethodNotAllowed", "true")
    assert _body(s3, bucket, "k", VersionId=first) == b"one"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert _listed(s3, bucket) == [("k", marker, True, True), ("k", first, False, False)]
    undone = s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)  # undelete
    assert (undone["DeleteMarker"], undone["VersionId"]) == (True, marker)
    assert _body(s3, bucket, "k") == b"one"


def test_suspended_writes_replace_the_null_version(s3: Any, bucket: str) -> None:
    kept = s3.put_object(Bucket=bucket, Key="k", Body=b"kept")["VersionId"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"null 1")["VersionId"] == "null"
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"null 2")["VersionId"] == "null"
    assert _listed(s3, bucket) == [("k", "null", True, False), ("k", kept, False, False)]
    assert _body(s3, bucket, "k", VersionId="null") == b"null 2"
    deleted = s3.delete_object(Bucket=bucket, Key="k")  # a null marker replaces null 2
    assert (deleted["DeleteMarker"], deleted["VersionId"]) == (True, "null")
    assert _listed(s3, bucket) == [("k", "null", True, True), ("k", kept, False, False)]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    again = s3.put_object(Bucket=bucket, Key="k", Body=b"again")["VersionId"]
    assert [e[1] for e in _listed(s3, bucket)] == [again, "null", kept]


def test_list_object_versions_pages_prefixes_and_delimiter(s3: Any, bucket: str) -> None:
    ids: dict[str, list[str]] = {}
    for key in ("a", "b", "dir/x", "dir/y", "c"):
        for n in range(2):
            ids.setdefault(key, []).insert(
                0, s3.put_object(Bucket=bucket, Key=key, Body=b"%d" % n)["VersionId"]
            )
    s3.delete_object(Bucket=bucket, Key="c")
    whole = _listed(s3, bucket)
    assert len(whole) == 11
    paged: list[tuple[str, str, bool, bool]] = []
    options: dict[str, Any] = {"MaxKeys": 3}
    while True:
        page = s3.list_object_versions(Bucket=bucket, **options)
        paged += _listed(s3, bucket, **options)
        if not page["IsTruncated"]:
            break
        options = {
            "MaxKeys": 3,
            "KeyMarker": page["NextKeyMarker"],
            "VersionIdMarker": page["NextVersionIdMarker"],
        }
    assert paged == whole
    assert [e[1] for e in whole if e[0] == "a"] == ids["a"]
    rolled = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["dir/"]
    assert {v["Key"] for v in rolled["Versions"]} == {"a", "b", "c"}
    under = _listed(s3, bucket, Prefix="dir/")
    assert [(e[0], e[1]) for e in under] == [("dir/x", i) for i in ids["dir/x"]] + [
        ("dir/y", i) for i in ids["dir/y"]
    ]


def test_delete_objects_and_copies_of_versions(s3: Any, bucket: str) -> None:
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"first")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"second")["VersionId"]
    copied = s3.copy_object(
        Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k", "VersionId": first}
    )
    assert copied["CopySourceVersionId"] == first and copied["VersionId"] not in (first, second)
    assert _body(s3, bucket, "copy") == b"first"
    reply = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "k", "VersionId": first}, {"Key": "copy"}]},
    )
    by_key = {d["Key"]: d for d in reply["Deleted"]}
    assert by_key["k"]["VersionId"] == first and "DeleteMarker" not in by_key["k"]
    assert by_key["copy"]["DeleteMarker"] is True and by_key["copy"]["DeleteMarkerVersionId"]
    assert [e[1] for e in _listed(s3, bucket, Prefix="k")] == [second]


def test_a_bucket_with_versions_is_not_empty(s3: Any, bucket: str) -> None:
    version = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="k")  # a delete marker; the version stays
    with pytest.raises(ClientError) as error:
        s3.delete_bucket(Bucket=bucket)
    assert _error(error)[:2] == (409, "BucketNotEmpty")
    for entry in _listed(s3, bucket):
        s3.delete_object(Bucket=bucket, Key=entry[0], VersionId=entry[1])
    assert _listed(s3, bucket) == [] and version
    s3.delete_bucket(Bucket=bucket)


def test_multipart_uploads_get_versions(s3: Any, bucket: str) -> None:
    older = s3.put_object(Bucket=bucket, Key="big", Body=b"small")["VersionId"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    parts = []
    for number, body in ((1, b"a" * PART), (2, b"tail")):
        etag = s3.upload_part(
            Bucket=bucket, Key="big", UploadId=upload, PartNumber=number, Body=body
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert done["VersionId"] not in ("", older)
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == PART + 4
    assert _body(s3, bucket, "big", VersionId=older) == b"small"
    with pytest.raises(ClientError) as error:  # MFA delete is not built
        s3.put_bucket_versioning(
            Bucket=bucket,
            VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"},
            MFA="serial 123456",
        )
    assert _error(error)[:2] == (501, "NotImplemented")
