"""boto3, unchanged, against a running server: every operation of the subset, and refusals."""

from __future__ import annotations

import datetime
import hashlib
import io
import os
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

ACCESS, SECRET = "AKIDBLOCKSTEST", "s3cr3t/key+value"
PART = 5 * 1024 * 1024


def _client(endpoint: str, secret: str = SECRET, **extra: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        **extra,
    )


def _self_signed(directory: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture(params=["http", "https"])
def s3(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    import ssl

    store = LocalBlobStore(tmp_path / "data", chunk_bytes=1024 * 1024, fsync=False)
    context = None
    if request.param == "https":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*_self_signed(tmp_path))
    config = S3Config(credentials={ACCESS: SECRET})
    with running_server(store, config=config, ssl_context=context) as server:
        yield _client(server.endpoint, verify=False), server
    store.close()


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_every_operation_of_the_subset(s3: Any) -> None:
    client, server = s3
    client.create_bucket(Bucket="photos")
    client.create_bucket(Bucket="empty")
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["empty", "photos"]
    with pytest.raises(ClientError) as error:
        client.create_bucket(Bucket="photos")
    assert _code(error) == "BucketAlreadyOwnedByYou"

    small = b"hello, blob"
    put = client.put_object(
        Bucket="photos",
        Key="a/small.txt",
        Body=small,
        ContentType="text/plain",
        Metadata={"origin": "test"},
    )
    assert put["ETag"] == f'"{hashlib.md5(small).hexdigest()}"'
    large = os.urandom(3 * 1024 * 1024 + 17)
    client.put_object(Bucket="photos", Key="a/large.bin", Body=io.BytesIO(large))
    client.put_object(Bucket="photos", Key="b/empty", Body=b"")
    client.put_object(Bucket="photos", Key="top", Body=b"t")

    got = client.get_object(Bucket="photos", Key="a/small.txt")
    assert got["Body"].read() == small and got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"origin": "test"}
    assert client.get_object(Bucket="photos", Key="a/large.bin")["Body"].read() == large
    assert client.get_object(Bucket="photos", Key="b/empty")["Body"].read() == b""

    ranged = client.get_object(Bucket="photos", Key="a/large.bin", Range="bytes=1048570-1048600")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["ContentRange"] == f"bytes 1048570-1048600/{len(large)}"
    assert ranged["Body"].read() == large[1048570:1048601]
    suffix = client.get_object(Bucket="photos", Key="a/large.bin", Range="bytes=-5")
    assert suffix["Body"].read() == large[-5:]
    with pytest.raises(ClientError) as error:
        client.get_object(Bucket="photos", Key="a/small.txt", Range="bytes=100-200")
    assert _code(error) == "InvalidRange"

    head = client.head_object(Bucket="photos", Key="a/large.bin")
    assert head["ContentLength"] == len(large)
    with pytest.raises(ClientError) as error:
        client.head_object(Bucket="photos", Key="missing")
    assert _code(error) == "404"
    with pytest.raises(ClientError) as error:
        client.get_object(Bucket="photos", Key="missing")
    assert _code(error) == "NoSuchKey"

    listing = client.list_objects_v2(Bucket="photos", Delimiter="/")
    assert [c["Key"] for c in listing["Contents"]] == ["top"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["a/", "b/"]
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket="photos", PaginationConfig={"PageSize": 1}
    ):
        keys += [c["Key"] for c in page.get("Contents", [])]
    assert keys == ["a/large.bin", "a/small.txt", "b/empty", "top"]
    prefixed = client.list_objects_v2(Bucket="photos", Prefix="a/")
    assert [c["Size"] for c in prefixed["Contents"]] == [len(large), len(small)]

    upload = client.create_multipart_upload(Bucket="photos", Key="video", ContentType="video/x")
    upload_id = upload["UploadId"]
    pieces = [os.urandom(PART), os.urandom(PART), b"tail"]
    etags = [
        client.upload_part(
            Bucket="photos", Key="video", UploadId=upload_id, PartNumber=n + 1, Body=piece
        )["ETag"]
        for n, piece in enumerate(pieces)
    ]
    with pytest.raises(ClientError):
        client.head_object(Bucket="photos", Key="video")  # invisible until completed
    done = client.complete_multipart_upload(
        Bucket="photos",
        Key="video",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]},
    )
    assert done["ETag"].endswith('-3"')
    video = client.get_object(Bucket="photos", Key="video")
    assert video["Body"].read() == b"".join(pieces) and video["ContentType"] == "video/x"

    aborted = client.create_multipart_upload(Bucket="photos", Key="gone")["UploadId"]
    client.upload_part(Bucket="photos", Key="gone", UploadId=aborted, PartNumber=1, Body=b"x")
    client.abort_multipart_upload(Bucket="photos", Key="gone", UploadId=aborted)
    with pytest.raises(ClientError) as error:
        client.upload_part(Bucket="photos", Key="gone", UploadId=aborted, PartNumber=2, Body=b"y")
    assert _code(error) == "NoSuchUpload"

    # upload_file splits into parts through s3transfer's own multipart path.
    from boto3.s3.transfer import TransferConfig

    blob = os.urandom(12 * 1024 * 1024)
    client.upload_fileobj(
        io.BytesIO(blob),
        "photos",
        "transfer.bin",
        Config=TransferConfig(multipart_threshold=PART, multipart_chunksize=PART),
    )
    sink = io.BytesIO()
    client.download_fileobj("photos", "transfer.bin", sink)
    assert sink.getvalue() == blob

    with pytest.raises(ClientError) as error:
        client.delete_bucket(Bucket="photos")
    assert _code(error) == "BucketNotEmpty"
    for key in ("a/small.txt", "a/large.bin", "b/empty", "top", "video", "transfer.bin"):
        client.delete_object(Bucket="photos", Key=key)
    client.delete_object(Bucket="photos", Key="never-existed")
    assert client.list_objects_v2(Bucket="photos")["KeyCount"] == 0
    client.delete_bucket(Bucket="photos")
    client.delete_bucket(Bucket="empty")
    assert client.list_buckets()["Buckets"] == []
    assert server.store.ledger.wait_for_deletes()
    assert server.store.chunks.stored_chunk_ids() == set()
    # Over HTTPS boto3 sends aws-chunked bodies with a CRC32 trailer; over HTTP it signs them.
    assert (server.handler.aws_chunked_bodies > 0) == server.endpoint.startswith("https")


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_wrong_signature_is_refused_with_s3_error_shape(s3: Any) -> None:
    client, server = s3
    client.create_bucket(Bucket="locked")
    impostor = _client(server.endpoint, secret="wrong-secret", verify=False)
    with pytest.raises(ClientError) as error:
        impostor.put_object(Bucket="locked", Key="k", Body=b"data")
    response = error.value.response
    assert response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["Error"]["Message"]
    with pytest.raises(ClientError) as error:
        impostor.list_buckets()
    assert _code(error) == "SignatureDoesNotMatch"
    stranger = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id="NOBODY",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        verify=False,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as error:
        stranger.list_buckets()
    assert _code(error) == "InvalidAccessKeyId"
    assert client.list_objects_v2(Bucket="locked")["KeyCount"] == 0
