"""The XML documents of the S3 subset we serve: results, errors, and the completion request.

Theory of operation: every response document is built from escaped text with the S3
namespace, in the element order the S3 API reference gives (some SDKs parse by position).
The only document we parse is CompleteMultipartUpload's part list; it is small (bounded by the
HTTP layer), parsed with the standard library's expat-based parser (which refuses external
entities and limits entity expansion), and any shape we do not expect raises
``S3RequestError("MalformedXML")``.
"""

from __future__ import annotations

import functools
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from urllib.parse import quote
from xml.sax.saxutils import escape

from blocks.blob.api import BucketInfo, ListPage, ObjectInfo, PartInfo, UploadInfo
from blocks.blob.s3.awschunked import S3RequestError

__all__ = [
    "attributes_result",
    "complete_result",
    "error_document",
    "http_date",
    "initiate_result",
    "iso_time",
    "key_encoder",
    "list_buckets_result",
    "list_objects_v2_result",
    "list_parts_result",
    "list_uploads_result",
    "page_entries",
    "parse_complete_request",
    "parse_document",
]

_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'
COMPLETE_BODY_BYTES_MAX = 1024 * 1024
HTTP_DATES_KEPT = 256
"""Formatted HTTP dates kept (``http_date``): the current second and recent Last-Modified."""
OWNER = "<Owner><ID>blocks</ID><DisplayName>blocks</DisplayName></Owner>"
"""The one owner of every bucket and object (one set of keys, all-powerful)."""


def iso_time(ms: int) -> str:
    """A time in an XML document, whole seconds as S3 writes them (``...T12:00:05.000Z``):
    the precision of ``Last-Modified``, so that a client comparing a listing's time with a
    file time it set from either (``aws s3 sync --exact-timestamps``) sees them equal."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".000Z"


def http_date(ms: int) -> str:
    """An HTTP date (RFC 9110, IMF-fixdate) of whole seconds: ``Date`` and ``Last-Modified``
    of every response, so the formatted seconds are kept (``_http_date_s``)."""
    return _http_date_s(ms // 1000)


@functools.lru_cache(maxsize=HTTP_DATES_KEPT)
def _http_date_s(seconds: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))


def _element(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def error_document(code: str, message: str, resource: str, request_id: str) -> bytes:
    body = (
        f"{_HEADER}<Error>{_element('Code', code)}{_element('Message', message)}"
        f"{_element('Resource', resource)}{_element('RequestId', request_id)}</Error>"
    )
    return body.encode("utf-8")


def list_buckets_result(
    buckets: list[BucketInfo], prefix: str = "", continuation_token: str | None = None
) -> bytes:
    """ListBuckets: ``buckets`` (one page), the prefix asked for, and the token of the
    next page when there is one."""
    items = "".join(
        f"<Bucket>{_element('Name', b.name)}{_element('CreationDate', iso_time(b.created_ms))}"
        "</Bucket>"
        for b in buckets
    )
    owner = OWNER
    body = (
        f'{_HEADER}<ListAllMyBucketsResult xmlns="{_NAMESPACE}">{owner}'
        f"<Buckets>{items}</Buckets>"
        + (_element("ContinuationToken", continuation_token) if continuation_token else "")
        + (_element("Prefix", prefix) if prefix else "")
        + "</ListAllMyBucketsResult>"
    )
    return body.encode("utf-8")


def list_objects_v2_result(
    bucket: str,
    page: ListPage,
    *,
    prefix: str,
    delimiter: str,
    max_keys: int,
    start_after: str,
    continuation_token: str | None,
    url_encode: bool,
    fetch_owner: bool = False,
) -> bytes:
    encode = key_encoder(url_encode)
    parts = [
        f'{_HEADER}<ListBucketResult xmlns="{_NAMESPACE}">',
        _element("Name", bucket),
        _element("Prefix", encode(prefix)),
    ]
    if delimiter:
        parts.append(_element("Delimiter", encode(delimiter)))
    parts += [
        _element("MaxKeys", max_keys),
        _element("KeyCount", len(page.objects) + len(page.common_prefixes)),
        _element("IsTruncated", "true" if page.is_truncated else "false"),
    ]
    if url_encode:
        parts.append(_element("EncodingType", "url"))
    if continuation_token:
        parts.append(_element("ContinuationToken", continuation_token))
    if page.next_token:
        parts.append(_element("NextContinuationToken", page.next_token))
    if start_after:
        parts.append(_element("StartAfter", encode(start_after)))
    parts += page_entries(page, encode, owner=fetch_owner)
    parts.append("</ListBucketResult>")
    return "".join(parts).encode("utf-8")


def key_encoder(url_encode: bool) -> Callable[[str], str]:
    """``encoding-type=url``: keys, prefixes, markers and delimiters percent-encoded (UTF-8,
    ``/`` kept), so that keys XML 1.0 cannot carry still reach the client; the client
    decodes them because the document says ``<EncodingType>url</EncodingType>``."""
    return (lambda text: quote(text, safe="/")) if url_encode else (lambda text: text)


def page_entries(page: ListPage, encode: Callable[[str], str], *, owner: bool) -> list[str]:
    """A ListObjects page's ``Contents`` (one per object) and ``CommonPrefixes``."""
    entries = [
        "<Contents>"
        + _element("Key", encode(info.key))
        + _element("LastModified", iso_time(info.modified_ms))
        + _element("ETag", f'"{info.etag}"')
        + _element("Size", info.size)
        + _element("StorageClass", "STANDARD")
        + (OWNER if owner else "")
        + "</Contents>"
        for info in page.objects
    ]
    entries += [
        f"<CommonPrefixes>{_element('Prefix', encode(common))}</CommonPrefixes>"
        for common in page.common_prefixes
    ]
    return entries


def initiate_result(bucket: str, key: str, upload_id: str) -> bytes:
    body = (
        f'{_HEADER}<InitiateMultipartUploadResult xmlns="{_NAMESPACE}">'
        f"{_element('Bucket', bucket)}{_element('Key', key)}{_element('UploadId', upload_id)}"
        "</InitiateMultipartUploadResult>"
    )
    return body.encode("utf-8")


def complete_result(
    location: str, bucket: str, key: str, etag: str, checksums: Mapping[str, str] | None = None
) -> bytes:
    """CompleteMultipartUploadResult; ``checksums``: the composite the object keeps."""
    kept = "".join(
        _element(f"Checksum{name.upper()}", value) for name, value in (checksums or {}).items()
    )
    if kept:
        kept += _element("ChecksumType", "COMPOSITE")
    body = (
        f'{_HEADER}<CompleteMultipartUploadResult xmlns="{_NAMESPACE}">'
        f"{_element('Location', location)}{_element('Bucket', bucket)}{_element('Key', key)}"
        f"{_element('ETag', chr(34) + etag + chr(34))}{kept}</CompleteMultipartUploadResult>"
    )
    return body.encode("utf-8")


def list_parts_result(
    bucket: str, key: str, upload_id: str, parts: list[PartInfo], max_parts: int, marker: int
) -> bytes:
    """ListParts: the parts numbered above ``marker``, at most ``max_parts`` of them."""
    chosen = [part for part in parts if part.number > marker]
    truncated = len(chosen) > max_parts
    chosen = chosen[:max_parts]
    items = "".join(
        "<Part>"
        + _element("PartNumber", part.number)
        + _element("ETag", f'"{part.etag}"')
        + _element("Size", part.size)
        + "</Part>"
        for part in chosen
    )
    next_marker = chosen[-1].number if chosen else marker
    body = (
        f'{_HEADER}<ListPartsResult xmlns="{_NAMESPACE}">'
        f"{_element('Bucket', bucket)}{_element('Key', key)}{_element('UploadId', upload_id)}"
        f"{_element('PartNumberMarker', marker)}{_element('NextPartNumberMarker', next_marker)}"
        f"{_element('MaxParts', max_parts)}"
        f"{_element('IsTruncated', 'true' if truncated else 'false')}"
        f"{_element('StorageClass', 'STANDARD')}{items}</ListPartsResult>"
    )
    return body.encode("utf-8")


def list_uploads_result(bucket: str, prefix: str, uploads: list[UploadInfo]) -> bytes:
    """ListMultipartUploads: every upload in progress under ``prefix`` (one page)."""
    items = "".join(
        "<Upload>"
        + _element("Key", upload.key)
        + _element("UploadId", upload.upload_id)
        + _element("StorageClass", "STANDARD")
        + _element("Initiated", iso_time(upload.initiated_ms))
        + "</Upload>"
        for upload in uploads
    )
    body = (
        f'{_HEADER}<ListMultipartUploadsResult xmlns="{_NAMESPACE}">'
        f"{_element('Bucket', bucket)}{_element('KeyMarker', '')}"
        f"{_element('UploadIdMarker', '')}{_element('Prefix', prefix)}"
        f"{_element('MaxUploads', max(len(uploads), 1000))}{_element('IsTruncated', 'false')}"
        f"{items}</ListMultipartUploadsResult>"
    )
    return body.encode("utf-8")


def attributes_result(info: ObjectInfo, wanted: set[str]) -> bytes:
    """GetObjectAttributes for the attributes asked for that we keep (ETag, Checksum when
    the upload's was verified and kept, ObjectSize, StorageClass, ObjectParts' count)."""
    parts = [f'{_HEADER}<GetObjectAttributesResponse xmlns="{_NAMESPACE}">']
    if "etag" in wanted:
        parts.append(_element("ETag", info.etag))
    if "checksum" in wanted and info.checksums:
        kept = "".join(
            _element(f"Checksum{name.upper()}", value)
            for name, value in sorted(info.checksums.items())
        )
        kind = "COMPOSITE" if any("-" in v for v in info.checksums.values()) else "FULL_OBJECT"
        parts.append(f"<Checksum>{kept}{_element('ChecksumType', kind)}</Checksum>")
    if "objectparts" in wanted and info.parts_count:
        parts.append(f"<ObjectParts>{_element('TotalPartsCount', info.parts_count)}</ObjectParts>")
    if "storageclass" in wanted:
        parts.append(_element("StorageClass", "STANDARD"))
    if "objectsize" in wanted:
        parts.append(_element("ObjectSize", info.size))
    parts.append("</GetObjectAttributesResponse>")
    return "".join(parts).encode("utf-8")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse_document(body: bytes, root_name: str, size_max: int) -> ElementTree.Element:
    """A request's XML document whose root element is ``root_name`` (any namespace);
    ``S3RequestError`` (MalformedXML) for one larger than ``size_max`` bytes, with a
    document type declaration (no entity expansion), not well-formed, or another root."""
    if len(body) > size_max:
        raise S3RequestError("MalformedXML", "the document is too large")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise S3RequestError("MalformedXML", "document type declarations are not accepted")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as error:
        raise S3RequestError("MalformedXML", "the document is not well-formed XML") from error
    if _local(root.tag) != root_name:
        raise S3RequestError("MalformedXML", f"expected {root_name}")
    return root


def parse_complete_request(body: bytes) -> list[tuple[int, str]]:
    """The ``(part number, etag)`` list of a CompleteMultipartUpload request body."""
    root = parse_document(body, "CompleteMultipartUpload", COMPLETE_BODY_BYTES_MAX)
    parts: list[tuple[int, str]] = []
    for part in root:
        if _local(part.tag) != "Part":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in part}
        number, etag = fields.get("PartNumber", ""), fields.get("ETag", "")
        if not number.isdigit() or not etag:
            raise S3RequestError("MalformedXML", "each Part needs a PartNumber and an ETag")
        parts.append((int(number), etag.strip('"')))
    if not parts:
        raise S3RequestError("MalformedXML", "no parts listed")
    return parts
