"""Flexible checksums through boto3, unchanged, against a ``blocks blob serve`` process on
one reused client: every algorithm round-trips, a wrong value stores nothing, multipart
uploads keep the composite AWS documents (checksum of the part checksums, ``-N``), and
boto3's own defaults (CRC32 on PutObject and in upload_file's parts) work."""

from __future__ import annotations

import base64
import hashlib
import io
import signal
import socket
import subprocess
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from blocks.blob.checksums import crc32c, crc64nvme

boto3 = pytest.importorskip("boto3")
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

pytestmark = pytest.mark.process
ACCESS, SECRET = "AKIDCHECKSUMS", "checksum-secret"
PART = 5 * 1024 * 1024
STOP_TIMEOUT_S = 60.0


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _digests(data: bytes) -> dict[str, bytes]:
    return {
        "CRC32": zlib.crc32(data).to_bytes(4, "big"),
        "CRC32C": crc32c(data).to_bytes(4, "big"),
        "CRC64NVME": crc64nvme(data).to_bytes(8, "big"),
        "SHA1": hashlib.sha1(data).digest(),
        "SHA256": hashlib.sha256(data).digest(),
    }


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [
        sys.executable, "-m", "blocks", "blob", "serve", "--data-dir",
        str(tmp_path_factory.mktemp("checksums")), "--listen", f"127.0.0.1:{port}",
        "--no-fsync", "--access-key", ACCESS, "--secret-key", SECRET,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving S3" in line, line
        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        client.create_bucket(Bucket="sums")
        yield client
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_each_algorithm_round_trips(s3: Any) -> None:
    data = b"checksummed bytes " * 1000
    for algorithm, digest in _digests(data).items():
        key = f"obj-{algorithm}"
        s3.put_object(Bucket="sums", Key=key, Body=data, **{f"Checksum{algorithm}": _b64(digest)})
        head = s3.head_object(Bucket="sums", Key=key, ChecksumMode="ENABLED")
        assert head[f"Checksum{algorithm}"] == _b64(digest)
        assert head["ChecksumType"] == "FULL_OBJECT"
        got = s3.get_object(Bucket="sums", Key=key, ChecksumMode="ENABLED")
        assert got["Body"].read() == data and got[f"Checksum{algorithm}"] == _b64(digest)
        attributes = s3.get_object_attributes(Bucket="sums", Key=key, ObjectAttributes=["Checksum"])
        assert attributes["Checksum"][f"Checksum{algorithm}"] == _b64(digest)
        assert "ChecksumCRC32" not in s3.head_object(Bucket="sums", Key=key) or algorithm == "CRC32"


def test_a_wrong_checksum_stores_nothing(s3: Any) -> None:
    data = b"the real bytes"
    for algorithm, digest in _digests(data).items():
        wrong = bytes([digest[0] ^ 0x80]) + digest[1:]
        with pytest.raises(ClientError) as error:
            s3.put_object(
                Bucket="sums", Key="bad", Body=data, **{f"Checksum{algorithm}": _b64(wrong)}
            )
        assert _code(error) == "BadDigest", algorithm
        with pytest.raises(ClientError) as short:
            s3.put_object(
                Bucket="sums", Key="bad", Body=data, **{f"Checksum{algorithm}": _b64(digest[:3])}
            )
        assert _code(short) == "InvalidRequest", algorithm
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket="sums", Key="bad")
    assert _code(missing) == "404"


def test_boto3_defaults_put_and_upload_file(s3: Any) -> None:
    data = bytes(range(256)) * 400
    s3.put_object(Bucket="sums", Key="default", Body=data)  # boto3 adds CRC32 itself
    got = s3.get_object(Bucket="sums", Key="default", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got["ChecksumCRC32"] == _b64(zlib.crc32(data).to_bytes(4, "big"))
    big = bytes(range(251)) * (PART // 251 + 4000)  # two parts
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=2)
    s3.upload_fileobj(io.BytesIO(big), "sums", "uploaded", Config=config)
    crcs = [zlib.crc32(big[i : i + PART]).to_bytes(4, "big") for i in range(0, len(big), PART)]
    expected = _b64(zlib.crc32(b"".join(crcs)).to_bytes(4, "big")) + f"-{len(crcs)}"
    head = s3.head_object(Bucket="sums", Key="uploaded", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (expected, "COMPOSITE")
    read = s3.get_object(Bucket="sums", Key="uploaded", ChecksumMode="ENABLED")["Body"].read()
    assert read == big


def test_multipart_composite_and_a_wrong_part_checksum(s3: Any) -> None:
    parts = [b"p" * PART, b"q" * 1000]
    upload = s3.create_multipart_upload(Bucket="sums", Key="mp", ChecksumAlgorithm="SHA256")
    upload_id = upload["UploadId"]
    listed = []
    for number, body in enumerate(parts, 1):
        done = s3.upload_part(
            Bucket="sums", Key="mp", UploadId=upload_id, PartNumber=number, Body=body,
            ChecksumAlgorithm="SHA256",
        )  # fmt: skip
        assert done["ChecksumSHA256"] == _b64(hashlib.sha256(body).digest())
        listed.append(
            {"PartNumber": number, "ETag": done["ETag"], "ChecksumSHA256": done["ChecksumSHA256"]}
        )
    wrong = [listed[0], {**listed[1], "ChecksumSHA256": _b64(hashlib.sha256(b"x").digest())}]
    with pytest.raises(ClientError) as error:
        s3.complete_multipart_upload(
            Bucket="sums", Key="mp", UploadId=upload_id, MultipartUpload={"Parts": wrong}
        )
    assert _code(error) == "InvalidPart"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="sums", Key="mp")
    with pytest.raises(ClientError) as unsigned_part:  # the upload asked every part for SHA-256
        s3.upload_part(
            Bucket="sums", Key="mp", UploadId=upload_id, PartNumber=3, Body=b"z",
            ChecksumSHA1=_b64(hashlib.sha1(b"z").digest()),
        )  # fmt: skip
    assert _code(unsigned_part) == "InvalidRequest"
    done = s3.complete_multipart_upload(
        Bucket="sums", Key="mp", UploadId=upload_id, MultipartUpload={"Parts": listed}
    )
    joined = b"".join(hashlib.sha256(body).digest() for body in parts)
    expected = _b64(hashlib.sha256(joined).digest()) + "-2"
    assert done["ChecksumSHA256"] == expected
    head = s3.head_object(Bucket="sums", Key="mp", ChecksumMode="ENABLED")
    assert (head["ChecksumSHA256"], head["ChecksumType"]) == (expected, "COMPOSITE")
    assert s3.get_object(Bucket="sums", Key="mp")["Body"].read() == b"".join(parts)
