"""Who may do what to a bucket: access keys, bucket owners and a canned per-bucket policy.

Theory of operation. A server has a set of access keys (``AccessKey``: id, secret, whether
it is an *admin*). A bucket belongs to the key that created it (its *owner*, kept with the
bucket in the metadata journal, so it survives restarts and is replicated with the rest of
the metadata) and has one of two canned policies: ``private`` (only the owner) or
``public-read`` (anyone, signed or not, may read its objects and list it). Admin keys may do
everything to every bucket. ``decide`` is the whole rule, a pure function of the caller, the
operation's class (``Action``) and the bucket's (owner, policy); ``classify`` names the class
of a request from its method, path and query. Every write needs a signature whatever the
policy: ``public-read`` never grants a write.

A bucket with no owner (made before owners were kept, or by a server without keys) is an
admin's alone. A non-admin key that names a bucket that does not exist gets ``NoSuchBucket``
from the check itself (so an operation never runs on a bucket created after the check by
someone else); an anonymous request gets ``AccessDenied`` for it.

The canned policy is set with S3's ``x-amz-acl`` header: on CreateBucket, or on
PutBucketAcl (``PUT /bucket?acl`` with an empty body); GetBucketAcl returns it as an
``AccessControlPolicy`` (the owner's FULL_CONTROL, plus READ for AllUsers when public).
Grant headers, ACL documents and other canned ACLs are ``NotImplemented``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from xml.sax.saxutils import escape

from blocks.blob.api import BucketInfo
from blocks.blob.s3.awschunked import S3RequestError
from blocks.blob.s3.ops import subresources
from blocks.core.errors import InvalidArgument

__all__ = [
    "ACCESS_KEYS_MAX",
    "PRIVATE",
    "PUBLIC_READ",
    "AccessKey",
    "AccessStore",
    "Action",
    "acl_document",
    "canned_acl",
    "classify",
    "decide",
    "parse_access_keys",
]

PRIVATE = "private"
PUBLIC_READ = "public-read"
CANNED_ACLS = frozenset({PRIVATE, PUBLIC_READ})
ACCESS_KEYS_MAX = 10_000
"""Most keys one access-key file may hold."""
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{3,128}$")
_SECRET = re.compile(r"^\S{8,256}$")
_BUCKET_READS = frozenset(
    {
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "encoding-type",
        "list-type",
        "continuation-token",
        "start-after",
        "fetch-owner",
        "location",
        "versions",
        "key-marker",
        "version-id-marker",
    }
)
_OBJECT_READS = frozenset({"partNumber", "attributes", "versionId"})


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key: str
    secret: str
    admin: bool = False


class Action(enum.Enum):
    LIST_BUCKETS = "list-buckets"
    CREATE_BUCKET = "create-bucket"
    READ = "read"
    """Reading an object or listing a bucket: what ``public-read`` grants."""
    OWNER = "owner"
    """Everything else: writes, deletes, the bucket's policy, uploads."""


@runtime_checkable
class AccessStore(Protocol):
    """What a store keeps of bucket access (``LocalBlobStore`` and its replicated kind)."""

    def create_bucket(self, name: str, owner: str = "", acl: str = "") -> BucketInfo:
        """``BlobStore.create_bucket``, keeping the bucket's owner and policy."""
        ...

    def bucket_access(self, name: str) -> tuple[str, str] | None:
        """(owner, acl) of the bucket ("" for none); ``None`` if there is no such bucket."""
        ...

    def set_bucket_acl(self, name: str, acl: str) -> None:
        """Keep ``acl`` as the bucket's policy; ``NotFound`` if there is no such bucket."""
        ...


def parse_access_keys(text: str) -> list[AccessKey]:
    """Keys from an access-key file: one ``ACCESS_KEY SECRET [admin]`` per line; blank
    lines and lines starting with ``#`` are skipped. ``InvalidArgument`` (naming the line)
    for a malformed line, a repeated key id, or more than ``ACCESS_KEYS_MAX`` keys."""
    keys: dict[str, AccessKey] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] != "admin"):
            raise InvalidArgument(f"access-key line {number}: expected ACCESS_KEY SECRET [admin]")
        if not _KEY_ID.match(fields[0]) or not _SECRET.match(fields[1]):
            raise InvalidArgument(f"access-key line {number}: malformed key id or secret")
        if fields[0] in keys:
            raise InvalidArgument(f"access-key line {number}: key {fields[0]!r} repeated")
        if len(keys) == ACCESS_KEYS_MAX:
            raise InvalidArgument(f"more than {ACCESS_KEYS_MAX} access keys")
        keys[fields[0]] = AccessKey(fields[0], fields[1], len(fields) == 3)
    return list(keys.values())


def classify(method: str, bucket: str, key: str, query: Mapping[str, str]) -> Action:
    """The class of a request on ``/bucket/key`` (see the module docstring)."""
    names = subresources(query)
    if not bucket:
        return Action.LIST_BUCKETS
    if not key:
        if method == "PUT" and not names:
            return Action.CREATE_BUCKET
        if method == "HEAD" or (method == "GET" and names <= _BUCKET_READS):
            return Action.READ
        return Action.OWNER
    if method in ("GET", "HEAD") and names <= _OBJECT_READS:
        return Action.READ
    return Action.OWNER


def decide(
    principal: str | None, admin: bool, action: Action, access: tuple[str, str] | None
) -> None:
    """Allow the request (return) or raise ``S3RequestError``: ``AccessDenied`` (403), or
    ``NoSuchBucket`` (404) for a signed non-admin request naming a missing bucket.
    ``principal`` is the signing key id (``None``: anonymous); ``access`` is the bucket's
    (owner, acl), ``None`` when it does not exist (ignored for bucket-less actions)."""
    if principal is None:
        if action is Action.READ and access is not None and access[1] == PUBLIC_READ:
            return
        raise S3RequestError("AccessDenied", "Access Denied", 403)
    if admin or action in (Action.LIST_BUCKETS, Action.CREATE_BUCKET):
        return
    if access is None:
        raise S3RequestError("NoSuchBucket", "The specified bucket does not exist", 404)
    owner, acl = access
    if owner == principal or (action is Action.READ and acl == PUBLIC_READ):
        return
    raise S3RequestError("AccessDenied", "Access Denied", 403)


def canned_acl(headers: Mapping[str, str], default: str | None) -> str | None:
    """The canned policy a request's ``x-amz-acl`` names (``default`` when absent);
    ``NotImplemented`` for grant headers and canned ACLs other than private/public-read."""
    if any(name.startswith("x-amz-grant-") for name in headers):
        raise S3RequestError("NotImplemented", "ACL grants are not implemented here", 501)
    value = headers.get("x-amz-acl")
    if value is None:
        return default
    value = value.strip().lower()
    if value not in CANNED_ACLS:
        raise S3RequestError("NotImplemented", f"the canned ACL {value!r} is not served", 501)
    return value


_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def acl_document(owner: str, acl: str) -> bytes:
    """GetBucketAcl's ``AccessControlPolicy`` for a bucket's (owner, acl)."""
    owner_id = escape(owner or "admin")
    owner_xml = f"<ID>{owner_id}</ID><DisplayName>{owner_id}</DisplayName>"
    grants = [
        f'<Grant><Grantee xmlns:xsi="{_XSI}" xsi:type="CanonicalUser">{owner_xml}</Grantee>'
        "<Permission>FULL_CONTROL</Permission></Grant>"
    ]
    if acl == PUBLIC_READ:
        grants.append(
            f'<Grant><Grantee xmlns:xsi="{_XSI}" xsi:type="Group"><URI>{_ALL_USERS}</URI>'
            "</Grantee><Permission>READ</Permission></Grant>"
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<AccessControlPolicy xmlns="{_XMLNS}">'
        f"<Owner>{owner_xml}</Owner><AccessControlList>{''.join(grants)}</AccessControlList>"
        "</AccessControlPolicy>"
    ).encode()
