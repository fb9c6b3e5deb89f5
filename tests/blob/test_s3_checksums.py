"""Flexible checksums without processes: the table-driven CRCs against published check
values, value checks, multipart composites, and the request/reply helpers."""

from __future__ import annotations

import base64
import hashlib
import zlib
from pathlib import Path

import pytest

from blocks.blob import LocalBlobStore
from blocks.blob.checksums import (
    ChecksumMismatch,
    check_value,
    composite,
    crc32c,
    crc64nvme,
    multipart_checksums,
    new_hasher,
)
from blocks.blob.s3.awschunked import S3RequestError, verify_checksums
from blocks.blob.s3.checksums import (
    checksum_type,
    complete_part_checksums,
    response_checksums,
    upload_algorithm,
)
from blocks.core.errors import InvalidArgument


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_crcs_match_published_check_values() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    # RFC 3720 (iSCSI) B.4 vectors
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888
    assert crc32c(b"") == 0 and crc64nvme(b"") == 0
    # incremental equals whole
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")
    assert crc64nvme(b"6789", crc64nvme(b"12345")) == crc64nvme(b"123456789")


def test_hashers_give_s3_digests() -> None:
    data = b"some bytes" * 100
    expected = {
        "crc32": zlib.crc32(data).to_bytes(4, "big"),
        "crc32c": crc32c(data).to_bytes(4, "big"),
        "crc64nvme": crc64nvme(data).to_bytes(8, "big"),
        "sha1": hashlib.sha1(data).digest(),
        "sha256": hashlib.sha256(data).digest(),
    }
    for algorithm, digest in expected.items():
        hasher = new_hasher(algorithm)
        assert hasher is not None
        hasher.update(data[:7])
        hasher.update(memoryview(data)[7:])
        assert hasher.digest() == digest
        echoed = verify_checksums(data, {f"x-amz-checksum-{algorithm}": _b64(digest)})
        assert echoed == {f"x-amz-checksum-{algorithm}": _b64(digest)}
        wrong = bytes([digest[0] ^ 1]) + digest[1:]
        with pytest.raises(S3RequestError) as error:
            verify_checksums(data, {f"x-amz-checksum-{algorithm}": _b64(wrong)})
        assert error.value.code == "BadDigest"
    assert new_hasher("md5") is None


def test_malformed_checksums_are_invalid_requests() -> None:
    for values in (
        {"x-amz-checksum-crc32c": "not base64!"},
        {"x-amz-checksum-crc32": _b64(b"12345")},  # five bytes, not four
    ):
        with pytest.raises(S3RequestError) as error:
            verify_checksums(b"x", values)
        assert error.value.code == "InvalidRequest"
    with pytest.raises(ValueError):
        check_value("sha256", _b64(bytes(31)))


def test_composite_is_the_checksum_of_part_checksums() -> None:
    parts = [b"a" * 100, b"b" * 50]
    digests = [hashlib.sha256(p).digest() for p in parts]
    expected = _b64(hashlib.sha256(b"".join(digests)).digest()) + "-2"
    assert composite("sha256", [_b64(d) for d in digests]) == expected
    crcs = [zlib.crc32(p).to_bytes(4, "big") for p in parts]
    joined = zlib.crc32(b"".join(crcs)).to_bytes(4, "big")
    assert composite("crc32", [_b64(c) for c in crcs]) == _b64(joined) + "-2"


def test_multipart_checksums_rules() -> None:
    one, two = {"crc32": _b64(b"\0\0\0\1")}, {"crc32": _b64(b"\0\0\0\2")}
    parts = [(1, one), (2, two)]
    value = composite("crc32", [one["crc32"], two["crc32"]])
    assert multipart_checksums("crc32", parts, {}, {}) == {"crc32": value}
    assert multipart_checksums("crc32", parts, {1: one}, {"crc32": value}) == {"crc32": value}
    bare = value.rpartition("-")[0]
    assert multipart_checksums("crc32", parts, {}, {"crc32": bare}) == {"crc32": value}
    assert multipart_checksums("", [(1, {})], {}, {}) == {}
    with pytest.raises(InvalidArgument, match="part 2"):
        multipart_checksums("crc32", parts, {2: one}, {})
    with pytest.raises(InvalidArgument, match="part 2"):
        multipart_checksums("crc32", [(1, one), (2, {})], {}, {})
    with pytest.raises(ChecksumMismatch):
        multipart_checksums("crc32", parts, {}, {"crc32": one["crc32"]})
    with pytest.raises(InvalidArgument):
        multipart_checksums("", [(1, {})], {}, {"crc32": value})


def test_request_and_reply_helpers() -> None:
    assert upload_algorithm({"x-amz-checksum-algorithm": "CRC32C"}) == "crc32c"
    assert upload_algorithm({}) == ""
    for headers, code in (
        ({"x-amz-checksum-algorithm": "MD5"}, "InvalidRequest"),
        (
            {"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "FULL_OBJECT"},
            "NotImplemented",
        ),
    ):
        with pytest.raises(S3RequestError) as error:
            upload_algorithm(headers)
        assert error.value.code == code
    assert checksum_type({"crc32": "AAAAAA==-3"}) == "COMPOSITE"
    assert response_checksums({"sha1": "x"}) == {
        "x-amz-checksum-sha1": "x",
        "x-amz-checksum-type": "FULL_OBJECT",
    }
    assert response_checksums({}) == {}
    body = (
        b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Part><PartNumber>1</PartNumber><ETag>e</ETag><ChecksumCRC32>AAAAAQ==</ChecksumCRC32>"
        b"</Part><Part><PartNumber>2</PartNumber><ETag>f</ETag></Part></CompleteMultipartUpload>"
    )
    assert complete_part_checksums(body) == {1: {"crc32": "AAAAAQ=="}}
    with pytest.raises(S3RequestError):
        complete_part_checksums(body.replace(b"AAAAAQ==", b"AAAA"))


def test_part_checksums_and_the_algorithm_survive_reopening(tmp_path: Path) -> None:
    """They are journaled with the upload and its parts (and so replicated with them)."""
    parts = [b"a" * 1000, b"b" * 10]
    sums = [{"sha1": _b64(hashlib.sha1(p).digest())} for p in parts]
    store = LocalBlobStore(tmp_path, fsync=False, part_bytes_min=1)
    store.create_bucket("bkt")
    upload_id = store.create_multipart_upload("bkt", "k", checksum_algorithm="sha1")
    etags = [
        store.upload_part("bkt", "k", upload_id, n, p, s).etag
        for n, (p, s) in enumerate(zip(parts, sums, strict=True), 1)
    ]
    with pytest.raises(InvalidArgument, match="InvalidRequest"):
        store.upload_part("bkt", "k", upload_id, 3, b"c")
    store.close()
    store = LocalBlobStore(tmp_path, fsync=False, part_bytes_min=1)
    info = store.complete_multipart_upload(
        "bkt", "k", upload_id, [(1, etags[0]), (2, etags[1])], part_checksums={2: sums[1]}
    )
    expected = composite("sha1", [s["sha1"] for s in sums])
    assert info.checksums == {"sha1": expected} and expected.endswith("-2")
    store.close()
    store = LocalBlobStore(tmp_path, fsync=False)
    assert store.head_object("bkt", "k").checksums == {"sha1": expected}
    store.close()
