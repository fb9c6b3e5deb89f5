"""Pure translation between the ``blocks.blob`` API's values and boto3's S3 shapes.

Theory of operation: ``S3BlobStore`` checks its input with the blob block's own rules, then
builds boto3 arguments here (headers, conditions, checksums, bodies) and reads boto3 replies
back into ``ObjectInfo`` here. Nothing here sends a request; ``mapped_pieces`` only reads a
body it is given, mapping its failures to the block's errors.
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from blocks.blob.api import ObjectInfo
from blocks.blob.conditions import WriteCondition
from blocks.blob.listing import check_headers
from blocks.core.errors import InvalidArgument

from .s3_errors import mapped

__all__ = [
    "BODY_BYTES_MAX",
    "DEFAULT_CONTENT_TYPE",
    "PART_NUMBER_MAX",
    "bare_etag",
    "body_bytes",
    "check_part_number",
    "checksum_arguments",
    "checksums_of",
    "condition_arguments",
    "header_arguments",
    "info_of",
    "mapped_pieces",
    "ms_of",
    "parts_count",
]

BODY_BYTES_MAX = 64 * 1024 * 1024
"""The most bytes an iterable body may hold (it is joined in memory to be sent)."""
PART_NUMBER_MAX = 10_000
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_CHECKSUM_FIELDS = {
    "crc32": "ChecksumCRC32",
    "crc32c": "ChecksumCRC32C",
    "crc64nvme": "ChecksumCRC64NVME",
    "sha1": "ChecksumSHA1",
    "sha256": "ChecksumSHA256",
}
_HEADER_FIELDS = {
    "cache-control": "CacheControl",
    "content-disposition": "ContentDisposition",
    "content-encoding": "ContentEncoding",
    "content-language": "ContentLanguage",
    "expires": "Expires",
}


def ms_of(when: Any) -> int:
    return int(when.timestamp() * 1000) if isinstance(when, datetime.datetime) else 0


def bare_etag(etag: Any) -> str:
    return str(etag or "").strip('"').lower()


def parts_count(etag: str) -> int:
    _, dash, count = etag.rpartition("-")
    return int(count) if dash and count.isdigit() else 0


def body_bytes(data: bytes | Iterable[bytes]) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    pieces: list[bytes] = []
    total = 0
    for piece in data:
        total += len(piece)
        if total > BODY_BYTES_MAX:
            raise InvalidArgument(f"a body over {BODY_BYTES_MAX} bytes: upload it in parts")
        pieces.append(bytes(piece))
    return b"".join(pieces)


def header_arguments(headers: Mapping[str, str] | None) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for name, value in check_headers(headers).items():
        if name == "expires":
            try:
                arguments["Expires"] = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError) as error:
                raise InvalidArgument(f"malformed expires header {value!r}") from error
        else:
            arguments[_HEADER_FIELDS[name]] = value
    return arguments


def condition_arguments(condition: WriteCondition | None) -> dict[str, str]:
    if condition is None:
        return {}
    if condition.if_none_match:
        return {"IfNoneMatch": "*"}
    assert condition.if_match is not None
    return {"IfMatch": f'"{condition.if_match}"' if condition.if_match != "*" else "*"}


def check_part_number(number: int) -> None:
    if isinstance(number, bool) or not isinstance(number, int):
        raise InvalidArgument("a part number is an integer")
    if not 1 <= number <= PART_NUMBER_MAX:
        raise InvalidArgument(f"part numbers are 1..{PART_NUMBER_MAX}")


def checksum_arguments(checksums: Mapping[str, str]) -> dict[str, str]:
    """boto3's ``Checksum*`` arguments for checked ``{algorithm: base64}`` checksums."""
    return {_CHECKSUM_FIELDS[algorithm]: value for algorithm, value in checksums.items()}


def checksums_of(reply: Mapping[str, Any]) -> dict[str, str]:
    return {
        algorithm: str(reply[field])
        for algorithm, field in _CHECKSUM_FIELDS.items()
        if reply.get(field) and "-" not in str(reply[field])  # "-N": a checksum of parts
    }


def _headers_of(reply: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, field in _HEADER_FIELDS.items():
        if name == "expires":
            value = reply.get("ExpiresString")
            if value is None and isinstance(reply.get("Expires"), datetime.datetime):
                value = email.utils.format_datetime(reply["Expires"], usegmt=True)
        else:
            value = reply.get(field)
        if value:
            found[name] = str(value)
    return found


def info_of(bucket: str, key: str, reply: Mapping[str, Any], size: int) -> ObjectInfo:
    etag = bare_etag(reply.get("ETag"))
    return ObjectInfo(
        bucket,
        key,
        size,
        etag,
        str(reply.get("ContentType") or DEFAULT_CONTENT_TYPE),
        ms_of(reply.get("LastModified")),
        {str(k).lower(): str(v) for k, v in (reply.get("Metadata") or {}).items()},
        parts_count=parts_count(etag),
        checksums=checksums_of(reply),
        headers=_headers_of(reply),
    )


READ_PIECE_BYTES = 256 * 1024


def mapped_pieces(body: Any) -> Iterator[bytes | memoryview]:
    """The body's bytes piece by piece; a failed read leaves as the block's error."""
    try:
        while True:
            with mapped():
                piece = body.read(READ_PIECE_BYTES)
            if not piece:
                return
            yield piece
    finally:
        body.close()
