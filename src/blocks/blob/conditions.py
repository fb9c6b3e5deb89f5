"""Conditional requests: ``If-Match``, ``If-None-Match`` and the date conditions, as pure
functions of the headers and the object's current ETag and modification time.

Theory of operation. A read (GET, HEAD) is evaluated in RFC 9110's order, which is also
S3's: ``If-Match`` (else ``If-Unmodified-Since``) failing gives 412; then ``If-None-Match``
(else ``If-Modified-Since``) failing gives 304. A date condition is ignored when its tag
condition is present, and an unparsable date is ignored altogether. Times compare at whole
seconds, the precision of ``Last-Modified``.

A write (PUT, CompleteMultipartUpload) supports what S3 does: ``If-None-Match: *`` (create
only) and ``If-Match: <etag>`` (replace only that version; ``NotFound`` if there is none).
``check_write`` runs twice: in the handler before any byte of the body is read, and in the
store under its lock just before the commit, so a condition holds at the commit point.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass

from blocks.core.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = ["ConditionFailed", "WriteCondition", "check_write", "read_outcome"]


class ConditionFailed(FailedPrecondition):
    """A request's precondition does not hold (S3 ``PreconditionFailed``, HTTP 412)."""


@dataclass(frozen=True, slots=True)
class WriteCondition:
    """``if_match``: the ETag the current object must have; ``if_none_match``: no object
    may exist. At most one is set (S3 refuses both together)."""

    if_match: str | None = None
    if_none_match: bool = False

    def __post_init__(self) -> None:
        if self.if_match is not None and self.if_none_match:
            raise InvalidArgument("If-Match and If-None-Match cannot be combined on a write")

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> WriteCondition | None:
        """The condition a request's headers ask for, or ``None``."""
        if_match = headers.get("if-match")
        if_none_match = headers.get("if-none-match")
        if if_none_match is not None and if_none_match.strip() != "*":
            raise InvalidArgument("If-None-Match on a write must be '*'")
        if if_match is None and if_none_match is None:
            return None
        return cls(_bare(if_match) if if_match is not None else None, if_none_match is not None)


def _bare(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip('"').lower()


def _tags(value: str) -> set[str]:
    return {_bare(tag) for tag in value.split(",") if tag.strip()}


def check_write(condition: WriteCondition | None, current_etag: str | None) -> None:
    """Raise unless ``condition`` holds for the current object (``None``: no object)."""
    if condition is None:
        return
    if condition.if_none_match and current_etag is not None:
        raise ConditionFailed("an object already exists at this key (If-None-Match: *)")
    if condition.if_match is not None:
        if current_etag is None:
            raise NotFound("no such key: If-Match names an object that does not exist")
        if condition.if_match not in ("*", current_etag.lower()):
            raise ConditionFailed("the object's ETag does not match If-Match")


def _seconds(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return int(parsed.timestamp()) if parsed.tzinfo is not None else None


def read_outcome(headers: Mapping[str, str], etag: str, modified_ms: int) -> int | None:
    """412 or 304 when a read's conditions say so, else ``None`` (serve the object)."""
    modified_s = modified_ms // 1000
    etag = etag.lower()
    if_match = headers.get("if-match")
    if if_match is not None:
        tags = _tags(if_match)
        if "*" not in tags and etag not in tags:
            return 412
    else:
        since = _seconds(headers.get("if-unmodified-since"))
        if since is not None and modified_s > since:
            return 412
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = _tags(if_none_match)
        if "*" in tags or etag in tags:
            return 304
    else:
        since = _seconds(headers.get("if-modified-since"))
        if since is not None and modified_s <= since:
            return 304
    return None
