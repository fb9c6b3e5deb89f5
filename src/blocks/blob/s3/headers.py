"""S3 headers in and out: ranges, user metadata, stored standard headers, an object's
response headers, and XML replies.

Theory of operation: pure functions between request headers (lowercase names, values as
latin-1 text, which keeps every byte) and the values a store keeps, and back. User metadata
sent as UTF-8 bytes is decoded as UTF-8 and answered RFC 2047-encoded, as S3 does.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

from blocks.blob.api import ObjectInfo
from blocks.blob.listing import STORED_HEADERS
from blocks.blob.s3.http import Response
from blocks.blob.s3.xml import http_date

__all__ = [
    "object_headers",
    "parse_range",
    "stored_headers",
    "user_metadata",
    "version_header",
    "xml_response",
]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(value: str | None) -> tuple[int, int] | None:
    """An inclusive byte range from a ``Range`` header, ``(-n, -1)`` for a suffix, or
    ``None`` to serve the whole object (absent, multi-range or unparsable, as S3 does)."""
    if not value:
        return None
    match = _RANGE.match(value.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        return (-int(last), -1) if int(last) > 0 else None
    return int(first), int(last) if last else 2**63


def stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The standard headers of a PUT that the object keeps (aws-chunked is transport)."""
    stored = {name: headers[name] for name in STORED_HEADERS if name in headers}
    encoding = stored.pop("content-encoding", "")
    kept = [e.strip() for e in encoding.split(",") if e.strip() and e.strip() != "aws-chunked"]
    if kept:
        stored["content-encoding"] = ",".join(kept)
    return stored


def user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """``x-amz-meta-*`` headers; values sent as UTF-8 bytes are decoded as UTF-8 (heads are
    decoded as latin-1, which keeps every byte)."""
    return {
        name[len("x-amz-meta-") :]: _from_wire(value)
        for name, value in headers.items()
        if name.startswith("x-amz-meta-")
    }


def _from_wire(value: str) -> str:
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return value


def _to_wire(value: str) -> str:
    """A metadata value for a response header: ASCII as it is, anything else RFC 2047
    encoded (``=?UTF-8?B?...?=``), as S3 answers non-ASCII metadata."""
    if value.isascii():
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="


def object_headers(info: ObjectInfo) -> dict[str, str]:
    headers = {
        "ETag": f'"{info.etag}"',
        "Last-Modified": http_date(info.modified_ms),
        "Content-Type": info.content_type,
        "Accept-Ranges": "bytes",
    }
    if info.parts_count:
        headers["x-amz-mp-parts-count"] = str(info.parts_count)
    headers.update(version_header(info))
    for name, value in info.headers.items():
        headers["-".join(word.capitalize() for word in name.split("-"))] = value
    for name, value in info.metadata.items():
        headers[f"x-amz-meta-{name}"] = _to_wire(value)
    return headers


def version_header(info: ObjectInfo) -> dict[str, str]:
    """``x-amz-version-id`` of an object in a bucket that has a versioning status."""
    return {"x-amz-version-id": info.version_id} if info.version_id else {}


def xml_response(document: bytes) -> Response:
    return Response(200, {"Content-Type": "application/xml"}, document)
