"""The S3 front's half of flexible checksums: what a request asks for, what a reply says.

Theory of operation. Bodies are verified where they are read (``awschunked.PayloadChecks``);
this module reads the rest from a request: the algorithm a CreateMultipartUpload asks every
part to carry (``x-amz-checksum-algorithm``; only S3's default COMPOSITE type is served,
FULL_OBJECT for a multipart upload is ``NotImplemented``), the part checksums a
CompleteMultipartUpload lists, and the whole-object values it names in its headers. On the
way out, a kept value with a ``-N`` suffix is a multipart composite (``COMPOSITE``), any
other is ``FULL_OBJECT``; clients skip verifying a composite against the bytes they read.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree import ElementTree

from blocks.blob.checksums import ALGORITHMS, check_value
from blocks.blob.s3.awschunked import S3RequestError

__all__ = [
    "checksum_type",
    "complete_part_checksums",
    "response_checksums",
    "upload_algorithm",
]

_PREFIX = "x-amz-checksum-"


def checksum_type(values: Mapping[str, str]) -> str:
    """``COMPOSITE`` for a multipart composite (``...-N``), else ``FULL_OBJECT``."""
    return "COMPOSITE" if any("-" in value for value in values.values()) else "FULL_OBJECT"


def response_checksums(kept: Mapping[str, str]) -> dict[str, str]:
    """The reply headers that return an object's kept checksums."""
    if not kept:
        return {}
    headers = {f"{_PREFIX}{name}": value for name, value in kept.items()}
    headers[f"{_PREFIX}type"] = checksum_type(kept)
    return headers


def upload_algorithm(headers: Mapping[str, str]) -> str:
    """The checksum algorithm a CreateMultipartUpload asks for ("" for none)."""
    algorithm = headers.get(f"{_PREFIX}algorithm", "").strip().lower()
    kind = headers.get(f"{_PREFIX}type", "").strip().upper()
    if algorithm and algorithm not in ALGORITHMS:
        raise S3RequestError("InvalidRequest", f"unknown checksum algorithm {algorithm!r}")
    if kind not in ("", "COMPOSITE"):
        raise S3RequestError(
            "NotImplemented", f"{kind} checksums of multipart uploads are not served", 501
        )
    return algorithm


def complete_part_checksums(body: bytes) -> dict[int, dict[str, str]]:
    """The ``Checksum*`` values a CompleteMultipartUpload body lists, by part number (the
    body has been parsed once already by ``s3.xml.parse_complete_request``, which bounds and
    checks it; unknown elements are ignored as there)."""
    root = ElementTree.fromstring(body)
    found: dict[int, dict[str, str]] = {}
    for part in root:
        if _local(part.tag) != "Part":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in part}
        named = {}
        for algorithm in ALGORITHMS:
            value = fields.get(f"Checksum{algorithm.upper()}")
            if value is None:
                continue
            try:
                check_value(algorithm, value)
            except ValueError as error:
                raise S3RequestError("InvalidPart", str(error)) from error
            named[algorithm] = value
        if named:
            found[int(fields.get("PartNumber", "0"))] = named
    return found


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]
