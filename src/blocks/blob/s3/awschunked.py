"""aws-chunked request bodies and S3's flexible checksums.

Theory of operation. With ``Content-Encoding: aws-chunked`` the body is a sequence of chunks,
each ``<hex size>[;chunk-signature=<sig>]\\r\\n<bytes>\\r\\n``, ended by a zero-size chunk and
then, when ``x-amz-trailer`` announced one, trailing headers (``x-amz-checksum-crc32:<b64>``
and, for signed trailers, ``x-amz-trailer-signature``) and a blank line. Current boto3 sends
``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` bodies over HTTPS: unsigned chunks plus a CRC32
trailer. Other SDKs sign every chunk (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]``): each
chunk signature chains on the previous one, starting from the request's seed signature.

``decode_aws_chunked`` parses a whole body (the HTTP layer has read it with a size limit)
and checks every signature; ``verify_checksums`` checks the ``x-amz-checksum-*`` value (from a
header or a trailer) and ``Content-MD5`` against the decoded payload: CRC32, CRC32C,
CRC64NVME, SHA-1 and SHA-256 (``checksums``); a value that is not the base64 of a digest of
the algorithm's size is ``InvalidRequest``. Every failure raises ``S3RequestError`` with
S3's error code. ``PayloadChecks`` does the same checks piece by piece, for bodies that are
stored while they arrive (``blob/s3/streaming.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blocks.blob.checksums import ALGORITHMS, check_value, new_hasher
from blocks.blob.s3.sigv4 import SigningContext, chunk_signature, trailer_signature

__all__ = [
    "DecodedBody",
    "PayloadChecks",
    "S3RequestError",
    "decode_aws_chunked",
    "verify_checksums",
]

TRAILERS_MAX = 16
_CHECKSUM_PREFIX = "x-amz-checksum-"


class S3RequestError(Exception):
    """A malformed or inconsistent request body; ``code`` is S3's error code (HTTP 400)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class DecodedBody:
    payload: bytes
    trailers: dict[str, str] = field(default_factory=dict)


def _line(body: bytes, position: int) -> tuple[str, int]:
    end = body.find(b"\r\n", position)
    if end < 0 or end - position > 4096:
        raise S3RequestError("IncompleteBody", "aws-chunked body ends inside a line")
    try:
        return body[position:end].decode("ascii"), end + 2
    except UnicodeDecodeError as error:
        raise S3RequestError("InvalidRequest", "non-ASCII aws-chunked framing") from error


def decode_aws_chunked(body: bytes, context: SigningContext | None) -> DecodedBody:
    """Payload and trailers of an aws-chunked ``body``. With a ``context`` whose payload hash
    is a signed ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD*`` value, every chunk signature (and the
    trailer signature) is verified."""
    signed = context is not None and context.payload_hash.startswith("STREAMING-AWS4-HMAC")
    previous = context.seed_signature if context is not None else ""
    pieces: list[bytes] = []
    position = 0
    while True:
        header, position = _line(body, position)
        size_text, _, extension = header.partition(";")
        try:
            size = int(size_text, 16)
        except ValueError as error:
            raise S3RequestError("InvalidRequest", "bad aws-chunked chunk size") from error
        if size < 0 or position + size + (2 if size else 0) > len(body):
            raise S3RequestError("IncompleteBody", "aws-chunked chunk runs past the body")
        data = body[position : position + size]
        if signed:
            assert context is not None
            name, _, given = extension.partition("=")
            expected = chunk_signature(context, previous, hashlib.sha256(data).hexdigest())
            if name != "chunk-signature" or not hmac.compare_digest(given, expected):
                raise S3RequestError(
                    "SignatureDoesNotMatch", "a chunk signature does not match", status=403
                )
            previous = expected
        if size == 0:
            break
        if body[position + size : position + size + 2] != b"\r\n":
            raise S3RequestError("InvalidRequest", "aws-chunked chunk not followed by CRLF")
        pieces.append(data)
        position += size + 2
    trailers, trailer_lines, position = _read_trailers(body, position)
    if signed and trailers:
        assert context is not None
        given = trailers.pop("x-amz-trailer-signature", "")
        text = "".join(
            line + "\n" for line in trailer_lines if not line.startswith("x-amz-trailer-signature")
        )
        if not hmac.compare_digest(given, trailer_signature(context, previous, text)):
            raise S3RequestError(
                "SignatureDoesNotMatch", "the trailer signature does not match", status=403
            )
    if position != len(body):
        raise S3RequestError("InvalidRequest", "data after the end of an aws-chunked body")
    return DecodedBody(b"".join(pieces), trailers)


def _read_trailers(body: bytes, position: int) -> tuple[dict[str, str], list[str], int]:
    trailers: dict[str, str] = {}
    lines: list[str] = []
    for _ in range(TRAILERS_MAX + 1):
        line, position = _line(body, position)
        if not line:
            return trailers, lines, position
        name, colon, value = line.partition(":")
        if not colon:
            raise S3RequestError("InvalidRequest", "malformed trailer line")
        lines.append(f"{name.strip().lower()}:{value.strip()}")
        trailers[name.strip().lower()] = value.strip()
    raise S3RequestError("InvalidRequest", "too many trailers")


class PayloadChecks:
    """The ``x-amz-checksum-*`` and ``Content-MD5`` values of a request (headers or trailers,
    lowercase names), checked against a payload fed piece by piece: ``update`` with every
    piece in order, then ``finish``, which raises ``S3RequestError`` (BadDigest) on a mismatch
    and returns the checksums to echo back."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._expected: list[tuple[str, str, Any]] = []
        self.echoed: dict[str, str] = {}
        md5 = values.get("content-md5")
        if md5 is not None:
            try:
                expected = base64.b64encode(base64.b64decode(md5, validate=True)).decode()
            except binascii.Error as error:
                raise S3RequestError("InvalidDigest", "Content-MD5 is not base64") from error
            self._expected.append(("Content-MD5", expected, hashlib.md5(usedforsecurity=False)))
        for name, value in values.items():
            if not name.startswith(_CHECKSUM_PREFIX) or name == "x-amz-checksum-type":
                continue
            algorithm = name[len(_CHECKSUM_PREFIX) :]
            hasher = new_hasher(algorithm)
            if hasher is None:
                continue  # x-amz-checksum-algorithm, -mode, or a name S3 does not define
            try:
                check_value(algorithm, value)
            except ValueError as error:
                raise S3RequestError("InvalidRequest", f"{name}: {error}") from error
            self._expected.append((f"the {algorithm} checksum", value, hasher))
            self.echoed[name] = value

    def update(self, piece: bytes | memoryview) -> None:
        for _, _, hasher in self._expected:
            hasher.update(piece)

    def finish(self) -> dict[str, str]:
        for what, expected, hasher in self._expected:
            if base64.b64encode(hasher.digest()).decode() != expected:
                raise S3RequestError("BadDigest", f"{what} does not match the body")
        return self.echoed


VERIFIED_CHECKSUMS = ALGORITHMS


def verified_checksums(values: Mapping[str, str]) -> dict[str, str]:
    """The ``x-amz-checksum-*`` values of ``values`` whose algorithm ``PayloadChecks``
    verifies, by algorithm: what a store may keep and return as the object's checksums."""
    return {
        algorithm: values[_CHECKSUM_PREFIX + algorithm]
        for algorithm in VERIFIED_CHECKSUMS
        if _CHECKSUM_PREFIX + algorithm in values
    }


def verify_checksums(payload: bytes, values: Mapping[str, str]) -> dict[str, str]:
    """Check every ``x-amz-checksum-*`` and ``content-md5`` entry of ``values`` (headers or
    trailers, lowercase names) against ``payload``; return the checksums to echo back."""
    checks = PayloadChecks(values)
    checks.update(payload)
    return checks.finish()
