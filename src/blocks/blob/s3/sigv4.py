"""AWS Signature Version 4 verification for S3 requests, including aws-chunked signatures.

Theory of operation. The client signs a *canonical request* (method, path, sorted query,
the headers it lists in ``SignedHeaders``, and the payload hash it puts in
``x-amz-content-sha256``) with a key derived from its secret, the date, the region and the
service. We rebuild the same canonical request from what arrived, derive the same key from our
copy of the secret and compare signatures in constant time. The payload hash is either the
hex SHA-256 of the body (checked once the body is read), ``UNSIGNED-PAYLOAD``, or one of the
``STREAMING-*`` values for aws-chunked bodies, whose chunks carry a chain of signatures that
starts from the header signature (the *seed*); see ``awschunked``.

Everything here is pure: the caller passes the request parts and the current time in
milliseconds. Failures raise ``S3AuthError`` with S3's error code (``SignatureDoesNotMatch``,
``InvalidAccessKeyId``, ``RequestTimeTooSkewed``, ``AccessDenied``...).

Presigned URLs (query-string auth, ``verify_presigned``) sign the same canonical request
with the query minus ``X-Amz-Signature`` and ``UNSIGNED-PAYLOAD``, and expire after
``X-Amz-Expires`` seconds (at most seven days). Not supported: SigV2, SigV4a.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = [
    "EMPTY_SHA256",
    "S3AuthError",
    "SigningContext",
    "canonical_query",
    "check_signature",
    "chunk_signature",
    "secret_of",
    "sign_request",
    "signing_key",
    "trailer_signature",
    "verify_presigned",
    "verify_request",
]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SKEW_MS_MAX = 15 * 60 * 1000
PRESIGNED_EXPIRES_S_MAX = 7 * 24 * 3600
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,"
    r"\s*Signature=([0-9a-f]{64})\s*$"
)
_SPACES = re.compile(r"\s+")


class S3AuthError(Exception):
    """Authentication failed; ``code`` is the S3 error code to send (HTTP 403)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def secret_of(credentials: Mapping[str, str], access_key: str) -> str:
    """The secret of ``access_key``; ``S3AuthError(InvalidAccessKeyId)`` for a key not known."""
    secret = credentials.get(access_key)
    if secret is None:
        raise S3AuthError("InvalidAccessKeyId", "the access key id is not known")
    return secret


def check_signature(expected: str, given: str) -> None:
    """``S3AuthError(SignatureDoesNotMatch)`` unless ``given`` is ``expected`` (compared in
    constant time)."""
    if not hmac.compare_digest(expected, given):
        raise S3AuthError(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )


def _check_signed_headers(signed_headers: list[str]) -> None:
    if "host" not in signed_headers or signed_headers != sorted(signed_headers):
        raise S3AuthError("AccessDenied", "SignedHeaders must be sorted and include host")


@dataclass(frozen=True, slots=True)
class SigningContext:
    """What later checks (body hash, chunk signatures) need from a verified request."""

    access_key: str
    amz_date: str
    scope: str
    key: bytes
    seed_signature: str
    payload_hash: str


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


SIGNING_KEYS_MAX = 64
"""Derived keys kept (``_derived_key``): one per secret, day, region and service in use."""
_signing_keys: dict[tuple[str, str, str, str], bytes] = {}


def _derived_key(secret: str, date: str, region: str, service: str) -> bytes:
    """``signing_key``, kept: the key changes once a day per secret, and deriving it is four
    HMACs on every request otherwise. The secret is part of the cache key, so a changed
    secret never finds an old key. Bounded: past ``SIGNING_KEYS_MAX`` the cache starts
    again (a dict's reads and writes are atomic, so worker threads may share it)."""
    cache_key = (secret, date, region, service)
    key = _signing_keys.get(cache_key)
    if key is None:
        key = signing_key(secret, date, region, service)
        if len(_signing_keys) >= SIGNING_KEYS_MAX:
            _signing_keys.clear()
        _signing_keys[cache_key] = key
    return key


def canonical_query(raw_query: str) -> str:
    """Sorted ``key=value`` pairs, each percent-encoded the SigV4 way (RFC 3986)."""
    if not raw_query:
        return ""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
) -> str:
    lines = [method, raw_path or "/", canonical_query(raw_query)]
    for name in signed_headers:
        if name not in headers:
            raise S3AuthError("AccessDenied", f"signed header {name!r} is missing")
        value = headers[name].strip()
        if "  " in value or not value.isprintable():  # else no whitespace but single spaces
            value = _SPACES.sub(" ", value)
        lines.append(f"{name}:{value}")
    lines += ["", ";".join(signed_headers), payload_hash]
    return "\n".join(lines)


def _string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    # The client signs the bytes it sends. Heads are decoded as latin-1 (``http``), so
    # encoding back as latin-1 gives exactly those bytes, also for header values a client
    # sent as UTF-8 (non-ASCII user metadata); UTF-8 here would hash them twice encoded.
    digest = hashlib.sha256(canonical_request.encode("latin-1")).hexdigest()
    return f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{digest}"


_EPOCH = datetime.datetime(1970, 1, 1)
_ONE_MS = datetime.timedelta(milliseconds=1)
_last_amz_date: tuple[str, int] = ("", 0)
"""The last date parsed and its value: a client's requests of one second share it."""


def _parse_amz_date(amz_date: str) -> int:
    """``YYYYMMDDTHHMMSSZ`` (UTC) in milliseconds since the epoch. Parsed by position, the
    last one kept: ``time.strptime`` consults the locale on every call, which was a tenth
    of a small request's work."""
    global _last_amz_date
    last = _last_amz_date
    if amz_date and last[0] == amz_date:  # the empty start value is never a date
        return last[1]
    digits = amz_date[:8] + amz_date[9:15]
    if (
        len(amz_date) != 16
        or amz_date[8] != "T"
        or amz_date[15] != "Z"
        or not (digits.isascii() and digits.isdigit())
    ):
        raise S3AuthError("AccessDenied", "bad x-amz-date")
    try:
        moment = datetime.datetime(
            int(digits[0:4]),
            int(digits[4:6]),
            int(digits[6:8]),
            int(digits[8:10]),
            int(digits[10:12]),
            int(digits[12:14]),
        )
    except ValueError as error:  # month 13, February 30, hour 24...
        raise S3AuthError("AccessDenied", "bad x-amz-date") from error
    value = (moment - _EPOCH) // _ONE_MS
    _last_amz_date = (amz_date, value)
    return value


def verify_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    credentials: Mapping[str, str],
    now_ms: int,
) -> SigningContext:
    """Check a request's ``Authorization`` header; return what body checks need.

    ``headers`` must have lowercase names. Raises ``S3AuthError`` on any failure."""
    authorization = headers.get("authorization")
    if not authorization:
        raise S3AuthError("AccessDenied", "anonymous requests are not allowed")
    match = _AUTH.match(authorization)
    if match is None:
        raise S3AuthError("AuthorizationHeaderMalformed", "unsupported Authorization header")
    credential, signed_text, signature = match.groups()
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise S3AuthError("AuthorizationHeaderMalformed", "malformed credential scope")
    access_key, date = parts[0], parts[1]
    secret = secret_of(credentials, access_key)
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(date):
        raise S3AuthError("AccessDenied", "x-amz-date does not match the credential date")
    if abs(_parse_amz_date(amz_date) - now_ms) > SKEW_MS_MAX:
        raise S3AuthError("RequestTimeTooSkewed", "the request time is too far from ours")
    signed_headers = signed_text.split(";")
    _check_signed_headers(signed_headers)
    payload_hash = headers.get("x-amz-content-sha256", "")
    if not payload_hash:
        raise S3AuthError("InvalidRequest", "missing x-amz-content-sha256")
    canonical = _canonical_request(
        method, raw_path, raw_query, headers, signed_headers, payload_hash
    )
    return _checked(canonical, parts, secret, amz_date, signature, payload_hash)


def verify_presigned(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    credentials: Mapping[str, str],
    now_ms: int,
) -> SigningContext:
    """Check a presigned URL's query-string signature and expiry. Raises ``S3AuthError``."""
    params: dict[str, str] = {}
    kept: list[str] = []
    for item in raw_query.split("&"):
        name, _, value = item.partition("=")
        name = unquote(name)
        if name.startswith("X-Amz-"):
            params[name] = unquote(value)
        if name != "X-Amz-Signature":
            kept.append(item)
    if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise S3AuthError("AuthorizationQueryParametersError", "X-Amz-Algorithm must be SigV4")
    try:
        credential = params["X-Amz-Credential"]
        amz_date = params["X-Amz-Date"]
        expires_s = int(params["X-Amz-Expires"])
        signed_headers = params["X-Amz-SignedHeaders"].split(";")
        signature = params["X-Amz-Signature"]
    except (KeyError, ValueError) as error:
        raise S3AuthError(
            "AuthorizationQueryParametersError", "a presigned URL parameter is missing"
        ) from error
    if not 1 <= expires_s <= PRESIGNED_EXPIRES_S_MAX:
        raise S3AuthError("AuthorizationQueryParametersError", "X-Amz-Expires out of range")
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not amz_date.startswith(parts[1]):
        raise S3AuthError("AuthorizationQueryParametersError", "malformed credential scope")
    access_key = parts[0]
    secret = secret_of(credentials, access_key)
    signed_at_ms = _parse_amz_date(amz_date)
    if now_ms < signed_at_ms - SKEW_MS_MAX:
        raise S3AuthError("AccessDenied", "the presigned URL is not valid yet")
    if now_ms > signed_at_ms + expires_s * 1000:
        raise S3AuthError("AccessDenied", "Request has expired")
    _check_signed_headers(signed_headers)
    payload_hash = headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
    canonical = _canonical_request(
        method, raw_path, "&".join(kept), headers, signed_headers, payload_hash
    )
    return _checked(canonical, parts, secret, amz_date, signature, payload_hash)


def _checked(
    canonical: str,
    credential: list[str],
    secret: str,
    amz_date: str,
    signature: str,
    payload_hash: str,
) -> SigningContext:
    """Compare ``signature`` with ours over ``canonical`` (``credential``: the scope's five
    parts, access key first); the context the body checks need, or ``S3AuthError``."""
    access_key, date, region, service, _ = credential
    scope = f"{date}/{region}/{service}/aws4_request"
    key = _derived_key(secret, date, region, service)
    expected = hmac.digest(key, _string_to_sign(amz_date, scope, canonical).encode(), "sha256")
    check_signature(expected.hex(), signature)
    return SigningContext(access_key, amz_date, scope, key, signature, payload_hash)


def chunk_signature(context: SigningContext, previous: str, chunk_sha256: str) -> str:
    """The signature of one aws-chunked data chunk, chained on ``previous``."""
    text = (
        f"AWS4-HMAC-SHA256-PAYLOAD\n{context.amz_date}\n{context.scope}\n{previous}\n"
        f"{EMPTY_SHA256}\n{chunk_sha256}"
    )
    return hmac.new(context.key, text.encode(), hashlib.sha256).hexdigest()


def trailer_signature(context: SigningContext, previous: str, trailer_text: str) -> str:
    """The signature over the trailing headers of a signed aws-chunked body."""
    digest = hashlib.sha256(trailer_text.encode()).hexdigest()
    text = f"AWS4-HMAC-SHA256-TRAILER\n{context.amz_date}\n{context.scope}\n{previous}\n{digest}"
    return hmac.new(context.key, text.encode(), hashlib.sha256).hexdigest()


def sign_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    access_key: str,
    secret: str,
    amz_date: str,
    region: str = "us-east-1",
) -> str:
    """An ``Authorization`` value signing every given header (for tests and our client).
    ``headers`` must include ``host``, ``x-amz-date`` and ``x-amz-content-sha256``."""
    lowered = {name.lower(): value for name, value in headers.items()}
    signed = sorted(lowered)
    canonical = _canonical_request(
        method, raw_path, raw_query, lowered, signed, lowered["x-amz-content-sha256"]
    )
    date = amz_date[:8]
    scope = f"{date}/{region}/s3/aws4_request"
    key = signing_key(secret, date, region, "s3")
    signature = hmac.new(
        key, _string_to_sign(amz_date, scope, canonical).encode(), hashlib.sha256
    ).hexdigest()
    return (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
