"""Which S3 operation a request names, decided from its query and headers, before anything
is read or changed.

Theory of operation. S3 names many operations by a *subresource* in the query string
(``?tagging``, ``?acl``, ``?uploadId=``...) on the same path as the object. A server that
ignores an unknown one turns, say, DeleteObjectTagging into DeleteObject. So every query
parameter is either *known* to the operation being routed or makes the request
``NotImplemented`` (501): parameters that only carry signing (``X-Amz-*`` of a presigned
URL, SigV2's ``AWSAccessKeyId``, ``Expires``, ``Signature``), the SDK's operation hint
(``x-id``) or GET's ``response-*`` overrides never name an operation. Requests that ask for
server-side encryption, object lock or tags are refused the same way, before their body is
read: storing them without it would break the promise they asked for.
"""

from __future__ import annotations

from collections.abc import Mapping

from blocks.blob.s3.awschunked import S3RequestError

__all__ = [
    "RESPONSE_OVERRIDES",
    "not_implemented",
    "refuse_encryption",
    "response_overrides",
    "subresources",
]

RESPONSE_OVERRIDES = {
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
    "response-content-language": "Content-Language",
    "response-content-type": "Content-Type",
    "response-expires": "Expires",
}


_SIGNING_PARAMETERS = frozenset({"x-id", "AWSAccessKeyId", "Expires", "Signature"})


def subresources(query: Mapping[str, str]) -> set[str]:
    """The query parameters that may name an operation (see the module docstring)."""
    return {
        name
        for name in query
        if not name.lower().startswith("x-amz-")
        and name not in _SIGNING_PARAMETERS
        and name not in RESPONSE_OVERRIDES
    }


def not_implemented(names: set[str]) -> S3RequestError:
    listed = ", ".join(sorted(names)) or "this operation"
    return S3RequestError("NotImplemented", f"{listed} is not implemented here", 501)


# Request headers that ask for a promise this server does not keep, by name prefix, and
# the values that ask for nothing (rclone sends ``x-amz-bucket-object-lock-enabled: false``
# with every CreateBucket).
_UNKEPT_PROMISES = (
    ("x-amz-server-side-encryption", "server-side encryption", frozenset[str]()),
    ("x-amz-object-lock-legal-hold", "object lock", frozenset({"off"})),
    ("x-amz-object-lock-", "object lock", frozenset[str]()),
    ("x-amz-bucket-object-lock-enabled", "object lock", frozenset({"false"})),
    ("x-amz-tagging-directive", "tagging", frozenset({"copy", "replace"})),  # tags: below
    ("x-amz-tagging", "tagging", frozenset({""})),
)
_UNKEPT_PREFIXES = tuple(prefix for prefix, _, _ in _UNKEPT_PROMISES)


def refuse_encryption(headers: Mapping[str, str]) -> None:
    """Raise ``NotImplemented`` if the request asks for what is not built and must not be
    dropped silently: SSE-S3, SSE-KMS or SSE-C, object lock (retention, legal hold, a
    bucket with lock enabled) or tags (``x-amz-tagging`` on PUT, CreateMultipartUpload or
    CopyObject). A stored object that lacks them would break the promise the client asked
    for, e.g. an object "locked until 2030" that can be deleted at once."""
    for name, value in headers.items():
        if not name.startswith(_UNKEPT_PREFIXES):  # one C call a header; most miss
            continue
        for prefix, feature, harmless in _UNKEPT_PROMISES:
            if name.startswith(prefix):
                if value.strip().lower() in harmless:
                    break
                raise S3RequestError("NotImplemented", f"{feature} is not implemented here", 501)


def response_overrides(query: Mapping[str, str]) -> dict[str, str]:
    """The response headers a GET's ``response-*`` parameters ask for."""
    return {header: query[name] for name, header in RESPONSE_OVERRIDES.items() if name in query}
