"""Which S3 operation a request names, decided from its query and headers, before anything
is read or changed.

Theory of operation. S3 names many operations by a *subresource* in the query string
(``?tagging``, ``?acl``, ``?uploadId=``...) on the same path as the object. A server that
ignores an unknown one turns, say, DeleteObjectTagging into DeleteObject. So every query
parameter is either *known* to the operation being routed or makes the request
``NotImplemented`` (501): parameters that only carry signing (``X-Amz-*`` of a presigned
URL, SigV2's ``AWSAccessKeyId``, ``Expires``, ``Signature``), the SDK's operation hint
(``x-id``) or GET's ``response-*`` overrides never name an operation. Requests that ask for server-side encryption are refused the same way, before
their body is read: storing them unencrypted would break the promise they asked for.
"""

from __future__ import annotations

from collections.abc import Mapping

from blocks.blob.awschunked import S3RequestError

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


def refuse_encryption(headers: Mapping[str, str]) -> None:
    """Raise ``NotImplemented`` if the request asks for SSE-S3, SSE-KMS or SSE-C."""
    for name in headers:
        if name.startswith("x-amz-server-side-encryption"):
            raise S3RequestError(
                "NotImplemented", "server-side encryption is not implemented here", 501
            )


def response_overrides(query: Mapping[str, str]) -> dict[str, str]:
    """The response headers a GET's ``response-*`` parameters ask for."""
    return {header: query[name] for name, header in RESPONSE_OVERRIDES.items() if name in query}
