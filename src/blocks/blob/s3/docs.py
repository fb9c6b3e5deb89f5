"""XML documents of DeleteObjects, CopyObject, ListObjects (v1), bucket versioning
(Get/PutBucketVersioning) and ListObjectVersions.

Theory of operation: built the same way as ``s3.xml``'s (escaped text, S3 namespace, the
element order of the S3 API reference). The one request document, DeleteObjects' key list,
is bounded (``DELETE_KEYS_MAX`` keys, ``DELETE_BODY_BYTES_MAX`` bytes), refuses document
type declarations, and any unexpected shape raises ``S3RequestError("MalformedXML")``; so
does PutBucketVersioning's small document.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from blocks.blob.api import ListPage, ObjectInfo
from blocks.blob.s3.awschunked import S3RequestError
from blocks.blob.s3.xml import (
    _HEADER,
    _NAMESPACE,
    OWNER,
    _element,
    _local,
    iso_time,
    key_encoder,
    page_entries,
    parse_document,
)
from blocks.blob.storage.versioned import VersionPage

__all__ = [
    "DELETE_KEYS_MAX",
    "copy_result",
    "delete_result",
    "list_objects_v1_result",
    "list_versions_result",
    "parse_delete_request",
    "parse_versioning_request",
    "versioning_result",
]

DELETE_KEYS_MAX = 1000
DELETE_BODY_BYTES_MAX = 2 * 1024 * 1024


def _parse(body: bytes, root_name: str) -> ElementTree.Element:
    return parse_document(body, root_name, DELETE_BODY_BYTES_MAX)


def parse_versioning_request(body: bytes) -> str:
    """The status a PutBucketVersioning document asks for (``Enabled``, ``Suspended``);
    MFA delete is not served."""
    fields = {
        _local(child.tag): (child.text or "").strip()
        for child in _parse(body, "VersioningConfiguration")
    }
    if fields.get("MfaDelete", "Disabled") != "Disabled":
        raise S3RequestError("NotImplemented", "MFA delete is not implemented here", 501)
    status = fields.get("Status", "")
    if status not in ("Enabled", "Suspended"):
        raise S3RequestError("MalformedXML", "Status must be Enabled or Suspended")
    return status


def parse_delete_request(body: bytes) -> tuple[list[tuple[str, str | None]], bool]:
    """The (key, version id or None) pairs of a DeleteObjects request and whether it asked
    for a quiet reply."""
    root = _parse(body, "Delete")
    keys: list[tuple[str, str | None]] = []
    quiet = False
    for child in root:
        name = _local(child.tag)
        if name == "Quiet":
            quiet = (child.text or "").strip().lower() == "true"
        elif name == "Object":
            fields = {_local(item.tag): item.text or "" for item in child}
            if "Key" not in fields:
                raise S3RequestError("MalformedXML", "each Object needs a Key")
            keys.append((fields["Key"], fields.get("VersionId")))
    if not keys or len(keys) > DELETE_KEYS_MAX:
        raise S3RequestError("MalformedXML", f"between 1 and {DELETE_KEYS_MAX} keys")
    return keys, quiet


def delete_result(
    deleted: list[tuple[str, str | None, str, bool]], errors: list[tuple[str, str, str]]
) -> bytes:
    """``deleted`` entries (empty when quiet): key, the version id asked for (or None),
    the version id removed or written ("" in a bucket never versioned) and whether it is a
    delete marker; and ``(key, code, message)`` failures."""
    items = []
    for key, asked, version_id, marker in deleted:
        fields = _element("Key", key)
        if asked is not None:
            fields += _element("VersionId", asked)
        if marker:
            fields += _element("DeleteMarker", "true")
            fields += _element("DeleteMarkerVersionId", version_id)
        items.append(f"<Deleted>{fields}</Deleted>")
    items += [
        f"<Error>{_element('Key', key)}{_element('Code', code)}{_element('Message', text)}</Error>"
        for key, code, text in errors
    ]
    body = f'{_HEADER}<DeleteResult xmlns="{_NAMESPACE}">{"".join(items)}</DeleteResult>'
    return body.encode("utf-8")


def copy_result(info: ObjectInfo, root: str = "CopyObjectResult") -> bytes:
    """CopyObject's reply, or UploadPartCopy's with ``root="CopyPartResult"``."""
    body = (
        f'{_HEADER}<{root} xmlns="{_NAMESPACE}">'
        f"{_element('LastModified', iso_time(info.modified_ms))}"
        f"{_element('ETag', chr(34) + info.etag + chr(34))}</{root}>"
    )
    return body.encode("utf-8")


def versioning_result(status: str = "") -> bytes:
    """GetBucketVersioning: the status, none for a bucket never versioned."""
    if not status:
        return f'{_HEADER}<VersioningConfiguration xmlns="{_NAMESPACE}"/>'.encode()
    inner = _element("Status", status)
    return f'{_HEADER}<VersioningConfiguration xmlns="{_NAMESPACE}">{inner}</VersioningConfiguration>'.encode()


def list_versions_result(
    bucket: str,
    page: VersionPage,
    *,
    prefix: str,
    delimiter: str,
    key_marker: str,
    version_id_marker: str,
    max_keys: int,
    url_encode: bool = False,
) -> bytes:
    """ListObjectVersions: versions and delete markers in key order, newest first within
    a key (null versions named ``null``)."""
    encode = key_encoder(url_encode)
    parts = [
        f'{_HEADER}<ListVersionsResult xmlns="{_NAMESPACE}">',
        _element("Name", bucket),
        _element("Prefix", encode(prefix)),
        _element("KeyMarker", encode(key_marker)),
        _element("VersionIdMarker", version_id_marker),
        _element("MaxKeys", max_keys),
    ]
    if delimiter:
        parts.append(_element("Delimiter", encode(delimiter)))
    if url_encode:
        parts.append(_element("EncodingType", "url"))
    parts.append(_element("IsTruncated", "true" if page.is_truncated else "false"))
    if page.is_truncated:
        parts.append(_element("NextKeyMarker", encode(page.next_key_marker)))
        parts.append(_element("NextVersionIdMarker", page.next_version_id_marker))
    for entry in page.versions:
        common = (
            _element("Key", encode(entry.key))
            + _element("VersionId", entry.version_id)
            + _element("IsLatest", "true" if entry.is_latest else "false")
            + _element("LastModified", iso_time(entry.modified_ms))
        )
        if entry.delete_marker:
            parts.append(f"<DeleteMarker>{common}{OWNER}</DeleteMarker>")
            continue
        parts.append(
            f"<Version>{common}"
            + _element("ETag", f'"{entry.etag}"')
            + _element("Size", entry.size)
            + _element("StorageClass", "STANDARD")
            + OWNER
            + "</Version>"
        )
    for common_prefix in page.common_prefixes:
        parts.append(
            f"<CommonPrefixes>{_element('Prefix', encode(common_prefix))}</CommonPrefixes>"
        )
    parts.append("</ListVersionsResult>")
    return "".join(parts).encode("utf-8")


def list_objects_v1_result(
    bucket: str,
    page: ListPage,
    *,
    prefix: str,
    delimiter: str,
    marker: str,
    max_keys: int,
    url_encode: bool = False,
) -> bytes:
    """ListObjects (v1). ``NextMarker`` is sent when a delimiter was given, as S3 does;
    without one, clients continue from the last key."""
    encode = key_encoder(url_encode)
    parts = [
        f'{_HEADER}<ListBucketResult xmlns="{_NAMESPACE}">',
        _element("Name", bucket),
        _element("Prefix", encode(prefix)),
        _element("Marker", encode(marker)),
    ]
    if delimiter and page.is_truncated:
        last = max([o.key for o in page.objects] + list(page.common_prefixes))
        parts.append(_element("NextMarker", encode(last)))
    parts.append(_element("MaxKeys", max_keys))
    if delimiter:
        parts.append(_element("Delimiter", encode(delimiter)))
    if url_encode:
        parts.append(_element("EncodingType", "url"))
    parts.append(_element("IsTruncated", "true" if page.is_truncated else "false"))
    parts += page_entries(page, encode, owner=True)
    parts.append("</ListBucketResult>")
    return "".join(parts).encode("utf-8")
