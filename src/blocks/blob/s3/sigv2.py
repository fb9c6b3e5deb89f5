"""AWS Signature Version 2 query-string authentication: the presigned URLs boto3 makes by
default (``AWSAccessKeyId``, ``Expires``, ``Signature``).

Theory of operation. The client signs, with HMAC-SHA1 of its secret, the string
``METHOD \\n Content-MD5 \\n Content-Type \\n Expires \\n`` followed by its ``x-amz-*``
headers (lowercase, sorted, ``name:value`` lines) and the resource: the path as sent plus
the sub-resources S3 signs (``?uploadId=...``, ``response-*`` overrides...), sorted. We
rebuild the string from what arrived and compare in constant time; ``Expires`` is absolute
(seconds since the epoch). Pure: the caller passes the request and the time. Failures
raise ``S3AuthError``. Header-based SigV2 (``Authorization: AWS ...``) is not supported.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import unquote

from blocks.blob.s3.sigv4 import S3AuthError, check_signature, secret_of

__all__ = ["SIGNED_SUBRESOURCES", "verify_presigned_v2"]

SIGNED_SUBRESOURCES = frozenset(
    {
        "acl",
        "cors",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)


def verify_presigned_v2(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    credentials: Mapping[str, str],
    now_ms: int,
) -> str:
    """Check a SigV2 presigned URL; return its access key. Raises ``S3AuthError``."""
    params: dict[str, str] = {}
    signed: list[tuple[str, str | None]] = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, equals, value = item.partition("=")
        name, value = unquote(name), unquote(value)
        params[name] = value
        if name in SIGNED_SUBRESOURCES:
            signed.append((name, value if equals else None))
    try:
        access_key, signature = params["AWSAccessKeyId"], params["Signature"]
        expires_s = int(params["Expires"])
    except (KeyError, ValueError) as error:
        raise S3AuthError("AccessDenied", "a presigned URL parameter is missing") from error
    secret = secret_of(credentials, access_key)
    if now_ms > expires_s * 1000:
        raise S3AuthError("AccessDenied", "Request has expired")
    amz = "".join(
        f"{name}:{headers[name].strip()}\n" for name in sorted(headers) if name.startswith("x-amz-")
    )
    resource = raw_path or "/"
    if signed:
        resource += "?" + "&".join(
            name if value is None else f"{name}={value}" for name, value in sorted(signed)
        )
    text = (
        f"{method}\n{headers.get('content-md5', '')}\n{headers.get('content-type', '')}\n"
        f"{expires_s}\n{amz}{resource}"
    )
    digest = hmac.new(secret.encode(), text.encode("latin-1"), hashlib.sha1).digest()
    check_signature(base64.b64encode(digest).decode(), signature)
    return access_key
