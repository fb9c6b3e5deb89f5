"""The blob benchmark's helpers: the null S3 server (its ceiling) and the allocator tuning."""

from __future__ import annotations

import base64
import io
import platform
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from benchmarks.blob import _null_server

boto3 = pytest.importorskip("boto3")
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_null_server_answers_every_call_the_benchmark_makes() -> None:
    server = _null_server()
    try:
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id="key",
            aws_secret_access_key="secret",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        client.create_bucket(Bucket="b")
        client.put_object(Bucket="b", Key="small", Body=b"s" * 4096)
        small = client.get_object(Bucket="b", Key="small")
        # The checksum boto3 sent with the PUT comes back, so boto3 verifies the body as it
        # does against a server that keeps checksums (the ceiling includes that work).
        assert (
            small["ChecksumCRC32"]
            == base64.b64encode(zlib.crc32(b"s" * 4096).to_bytes(4, "big")).decode()
        )
        assert small["Body"].read() == b"s" * 4096
        # S3's standard headers too, which boto3 parses (Last-Modified into a datetime).
        assert small["LastModified"].year >= 2024 and small["ContentType"]
        assert small["ResponseMetadata"]["RequestId"]
        large = bytes(range(256)) * (40 * 1024 * 4)  # 40 MiB: multipart in 8 MiB parts
        client.upload_fileobj(io.BytesIO(large), "b", "large", Config=TransferConfig())
        assert client.get_object(Bucket="b", Key="large")["Body"].read() == large
    finally:
        server.stop()
    assert server.process.returncode is not None


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc malloc only")
def test_allocator_tuning_takes_on_glibc() -> None:
    script = "from blocks.blob.s3.allocator import tune_for_large_buffers as t; print(t())"
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert output.stdout.strip() == "True"
