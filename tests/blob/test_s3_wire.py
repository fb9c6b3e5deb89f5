"""The wire layers, byte by byte: HTTP heads, SigV4, aws-chunked bodies, checksums, XML."""

from __future__ import annotations

import asyncio
import base64
import calendar
import contextlib
import hashlib
import io
import time
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.blob.s3.awschunked import S3RequestError, decode_aws_chunked, verify_checksums
from blocks.blob.s3.handler import parse_range
from blocks.blob.s3.http import HttpError, Response, parse_head, read_body, render_response
from blocks.blob.s3.sigv4 import (
    EMPTY_SHA256,
    S3AuthError,
    canonical_query,
    chunk_signature,
    sign_request,
    verify_request,
)
from blocks.blob.s3.xml import parse_complete_request

ACCESS = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
MAY_24_2013_MS = calendar.timegm(time.strptime("20130524", "%Y%m%d")) * 1000

# -- HTTP ------------------------------------------------------------------------------------


def test_parse_head_whole() -> None:
    head = parse_head(
        b"PUT /bkt/a%20b?uploads&x=1 HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
    )
    assert (head.method, head.raw_path, head.raw_query) == ("PUT", "/bkt/a%20b", "uploads&x=1")
    assert head.path == "/bkt/a b" and head.headers == {"host": "h:1", "x-a": "1,2"}
    assert head.keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET noslash HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
    ],
)
def test_malformed_heads_are_400(raw: bytes) -> None:
    with pytest.raises(HttpError):
        parse_head(raw)


@given(st.binary(max_size=300))
def test_fuzzed_heads_only_raise_http_error(raw: bytes) -> None:
    with contextlib.suppress(HttpError):
        parse_head(raw + b"\r\n\r\n")


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def _body(data: bytes, headers: str, limit: int = 1000) -> bytes:
    head = parse_head(f"PUT /b/k HTTP/1.1\r\n{headers}\r\n".encode())
    return await read_body(_reader(data), head, limit)


def test_bodies_by_length_and_chunked() -> None:
    assert asyncio.run(_body(b"hello+trailing", "Content-Length: 5\r\n")) == b"hello"
    chunked = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n"
    assert asyncio.run(_body(chunked, "Transfer-Encoding: chunked\r\n")) == b"abcde"
    for bad, headers in [
        (b"abc", "Content-Length: 5\r\n"),
        (b"zz\r\n", "Transfer-Encoding: chunked\r\n"),
        (b"3\r\nabcXX", "Transfer-Encoding: chunked\r\n"),
        (b"", "Transfer-Encoding: gzip\r\n"),
        (b"x" * 2000, "Content-Length: 2000\r\n"),
        (b"", "Content-Length: -1\r\n"),
    ]:
        with pytest.raises(HttpError):
            asyncio.run(_body(bad, headers))


def test_render_response() -> None:
    head, body = render_response(
        Response(200, {"ETag": '"x"'}, b"abc"), head_only=False, keep_alive=True
    )
    assert (
        head
        == b'HTTP/1.1 200 OK\r\nETag: "x"\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n'
    )
    assert body == b"abc"
    (only,) = render_response(
        Response(200, {}, b"", content_length=9), head_only=True, keep_alive=False
    )
    assert b"Content-Length: 9" in only and only.endswith(b"Connection: close\r\n\r\n")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 2**63)),
        ("bytes=-3", (-3, -1)),
        ("bytes=-0", None),
        ("bytes=1-2,4-5", None),
        ("items=1-2", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header) == expected


# -- SigV4 -----------------------------------------------------------------------------------


def test_aws_published_get_object_example() -> None:
    headers = {
        "host": "examplebucket.s3.amazonaws.com",
        "range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
    }
    authorization = sign_request(
        "GET", "/test.txt", "", headers, ACCESS, SECRET, "20130524T000000Z"
    )
    assert authorization.endswith(
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    context = verify_request(
        "GET",
        "/test.txt",
        "",
        {**headers, "authorization": authorization},
        {ACCESS: SECRET},
        MAY_24_2013_MS,
    )
    assert context.scope == "20130524/us-east-1/s3/aws4_request"


def _chunked_example() -> tuple[dict[str, str], bytes]:
    """AWS's published streaming example: 66560 bytes of 'a' in chunks of 64 KiB and 1 KiB."""
    headers = {
        "host": "s3.amazonaws.com",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "content-encoding": "aws-chunked",
        "content-length": "66824",
        "x-amz-date": "20130524T000000Z",
        "x-amz-decoded-content-length": "66560",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
    }
    headers["authorization"] = sign_request(
        "PUT", "/examplebucket/chunkObject.txt", "", headers, ACCESS, SECRET, "20130524T000000Z"
    )
    signatures = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ]
    body = b"".join(
        b"%x;chunk-signature=%s\r\n%s\r\n" % (len(data), sig.encode(), data)
        for data, sig in zip([b"a" * 65536, b"a" * 1024, b""], signatures, strict=True)
    )
    assert len(body) == 66824
    return headers, body


def test_aws_published_chunked_upload_example() -> None:
    headers, body = _chunked_example()
    assert headers["authorization"].endswith(
        "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    )
    context = verify_request(
        "PUT", "/examplebucket/chunkObject.txt", "", headers, {ACCESS: SECRET}, MAY_24_2013_MS
    )
    assert decode_aws_chunked(body, context).payload == b"a" * 66560
    tampered = body.replace(b"aaaa", b"aaab", 1)
    with pytest.raises(S3RequestError) as error:
        decode_aws_chunked(tampered, context)
    assert error.value.code == "SignatureDoesNotMatch"
    assert chunk_signature(context, context.seed_signature, EMPTY_SHA256) != context.seed_signature


def test_botocore_signatures_verify_and_tampering_fails() -> None:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="PUT",
        url="http://127.0.0.1:9000/bkt/dir/a%20key%2B%C3%A9?partNumber=2&uploadId=a%2Fb",
        data=b"body",
        headers={"x-amz-meta-color": "blue  green"},
    )
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    headers.setdefault("host", "127.0.0.1:9000")
    path, _, query = prepared.url.split("9000", 1)[1].partition("?")
    now_ms = calendar.timegm(time.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")) * 1000
    context = verify_request("PUT", path, query, headers, {ACCESS: SECRET}, now_ms)
    assert context.payload_hash == hashlib.sha256(b"body").hexdigest()
    for changed in (
        {"x-amz-meta-color": "red"},
        {"host": "127.0.0.1:9001"},
        {"x-amz-content-sha256": EMPTY_SHA256},
    ):
        with pytest.raises(S3AuthError) as error:
            verify_request("PUT", path, query, {**headers, **changed}, {ACCESS: SECRET}, now_ms)
        assert error.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3AuthError):
        verify_request("PUT", path + "x", query, headers, {ACCESS: SECRET}, now_ms)
    with pytest.raises(S3AuthError) as error:
        verify_request("PUT", path, query, headers, {"OTHER": SECRET}, now_ms)
    assert error.value.code == "InvalidAccessKeyId"
    with pytest.raises(S3AuthError) as error:
        verify_request("PUT", path, query, headers, {ACCESS: SECRET}, now_ms + 16 * 60_000)
    assert error.value.code == "RequestTimeTooSkewed"
    for broken in ("", "AWS4-HMAC-SHA256 nonsense", "Basic abc"):
        with pytest.raises(S3AuthError):
            verify_request(
                "PUT", path, query, {**headers, "authorization": broken}, {ACCESS: SECRET}, now_ms
            )


def test_canonical_query() -> None:
    assert canonical_query("uploads") == "uploads="
    assert canonical_query("b=2&a=%2F&a=1") == "a=%2F&a=1&b=2"
    assert canonical_query("prefix=a b~") == "prefix=a%20b~"


# -- aws-chunked and checksums ---------------------------------------------------------------


def _botocore_chunked(data: bytes, chunk_size: int) -> bytes:
    from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

    wrapper = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=chunk_size,
    )
    return bytes(wrapper.read())


@given(data=st.binary(max_size=3000), chunk_size=st.integers(1, 1024))
def test_botocore_unsigned_trailer_bodies_decode(data: bytes, chunk_size: int) -> None:
    body = _botocore_chunked(data, chunk_size)
    decoded = decode_aws_chunked(body, None)
    assert decoded.payload == data
    echoed = verify_checksums(decoded.payload, decoded.trailers)
    assert echoed == {"x-amz-checksum-crc32": decoded.trailers["x-amz-checksum-crc32"]}
    if data:
        with pytest.raises(S3RequestError) as error:
            verify_checksums(data[:-1] + bytes([data[-1] ^ 1]), decoded.trailers)
        assert error.value.code == "BadDigest"


@given(body=st.binary(max_size=200))
def test_fuzzed_chunked_bodies_only_raise_request_errors(body: bytes) -> None:
    with contextlib.suppress(S3RequestError):
        decode_aws_chunked(body, None)


def test_truncated_and_trailing_data_are_refused() -> None:
    body = _botocore_chunked(b"x" * 100, 30)
    for cut in range(len(body) - 1):
        with pytest.raises(S3RequestError):
            decode_aws_chunked(body[:cut], None)
    with pytest.raises(S3RequestError):
        decode_aws_chunked(body + b"junk", None)


def test_checksum_headers() -> None:
    data = b"payload"
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    values = {"x-amz-checksum-crc32": crc, "x-amz-checksum-sha256": sha, "content-md5": md5}
    assert set(verify_checksums(data, values)) == {"x-amz-checksum-crc32", "x-amz-checksum-sha256"}
    for name in values:
        with pytest.raises(S3RequestError):
            verify_checksums(b"other", {name: values[name]})
    with pytest.raises(S3RequestError):
        verify_checksums(data, {"content-md5": "***"})


# -- XML -------------------------------------------------------------------------------------


def test_complete_request_parsing() -> None:
    body = (
        b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b'<Part><ETag>"abc"</ETag><PartNumber>1</PartNumber></Part>'
        b"<Part><PartNumber>2</PartNumber><ETag>def</ETag></Part></CompleteMultipartUpload>"
    )
    assert parse_complete_request(body) == [(1, "abc"), (2, "def")]
    for bad in (
        b"",
        b"<x/>",
        b"<CompleteMultipartUpload/>",
        b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>",
        b'<!DOCTYPE a [<!ENTITY e "x">]><CompleteMultipartUpload/>',
    ):
        with pytest.raises(S3RequestError):
            parse_complete_request(bad)
