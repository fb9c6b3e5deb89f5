"""Pure helpers: S3 name rules, listing with prefix, delimiter and pages, and byte ranges.

Theory of operation. Listing works on a sorted list of keys. Python compares ``str`` by code
point, which is the same order as comparing their UTF-8 bytes, so the order is S3's. A page
starts after a *marker*: the last key returned, or the last common prefix returned (then every
key under that prefix is skipped as well, since it rolled up into the prefix already). The
continuation token is that marker, tagged with its kind and base64url encoded: opaque to
clients, stateless for us.
"""

from __future__ import annotations

import base64
import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument

__all__ = [
    "KEY_BYTES_MAX",
    "METADATA_BYTES_MAX",
    "STORED_HEADERS",
    "Listing",
    "after_prefix",
    "check_bucket_name",
    "check_checksums",
    "check_headers",
    "check_key",
    "check_metadata",
    "list_keys",
    "resolve_range",
]

KEY_BYTES_MAX = 1024
METADATA_BYTES_MAX = 2048
MAX_KEYS_MAX = 1000
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", ".mrap", "--table-s3")
_METADATA_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def check_bucket_name(name: object) -> str:
    """``name`` if S3 would accept it as a bucket name, else ``InvalidArgument``."""
    if (
        not isinstance(name, str)
        or not _BUCKET_NAME.match(name)
        or ".." in name
        or _IP_ADDRESS.match(name)
        or name.startswith(_RESERVED_BUCKET_PREFIXES)
        or name.endswith(_RESERVED_BUCKET_SUFFIXES)
    ):
        raise InvalidArgument(f"invalid bucket name {name!r}")
    return name


def check_key(key: object) -> str:
    """``key`` if it is 1..1024 bytes of valid UTF-8 without NUL, else ``InvalidArgument``."""
    if not isinstance(key, str) or not key:
        raise InvalidArgument("object key must be a non-empty string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise InvalidArgument("object key must be valid UTF-8") from error
    if size > KEY_BYTES_MAX:
        raise InvalidArgument(f"object key must be at most {KEY_BYTES_MAX} bytes")
    if "\x00" in key:
        # S3's listings and error documents are XML 1.0, which cannot carry U+0000, not
        # even as a character reference: such an object could be stored but never named.
        raise InvalidArgument("object key must not contain U+0000 (NUL)")
    return key


CHECKSUM_ALGORITHMS = frozenset({"crc32", "crc32c", "crc64nvme", "sha1", "sha256"})


def check_checksums(checksums: Mapping[str, str] | None) -> dict[str, str]:
    """Checksums as a plain dict of known algorithm -> base64 text (at most 100 bytes)."""
    result: dict[str, str] = {}
    for algorithm, value in (checksums or {}).items():
        if algorithm not in CHECKSUM_ALGORITHMS or not isinstance(value, str):
            raise InvalidArgument(f"unknown checksum algorithm {algorithm!r}")
        if not 0 < len(value) <= 100 or not value.isascii():
            raise InvalidArgument(f"malformed {algorithm} checksum")
        result[algorithm] = value
    return result


STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
HEADER_BYTES_MAX = 1024


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Standard headers to store with an object: names from ``STORED_HEADERS``, values
    printable ASCII of at most ``HEADER_BYTES_MAX`` bytes."""
    result: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if name not in STORED_HEADERS or not isinstance(value, str):
            raise InvalidArgument(f"header {name!r} is not one an object keeps")
        if len(value) > HEADER_BYTES_MAX or not value.isascii() or not value.isprintable():
            raise InvalidArgument(f"malformed {name} header")
        result[name] = value
    return result


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """User metadata as a plain dict with lowercase names; at most 2 KiB in all."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgument("metadata must be a mapping of str to str")
    result: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgument("metadata names and values must be str")
        lowered = name.lower()
        if not _METADATA_NAME.match(lowered) or not value.isprintable():
            raise InvalidArgument(f"invalid metadata entry {name!r}")
        total += len(lowered.encode()) + len(value.encode("utf-8", "replace"))
        result[lowered] = value
    if total > METADATA_BYTES_MAX:
        raise InvalidArgument(f"user metadata exceeds {METADATA_BYTES_MAX} bytes")
    return result


@dataclass(frozen=True, slots=True)
class Listing:
    keys: tuple[str, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_token: str | None


def _encode_token(kind: str, marker: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}{marker}".encode()).decode("ascii")


def _decode_token(token: str) -> tuple[str, str]:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError) as error:
        raise InvalidArgument("invalid continuation token") from error
    if not text or text[0] not in "kp":
        raise InvalidArgument("invalid continuation token")
    return text[0], text[1:]


def after_prefix(keys: Sequence[str], prefix: str, start: int) -> int:
    """Index of the first key at or after ``start`` that does not start with ``prefix``."""
    low, high = start, len(keys)
    while low < high:  # keys with the prefix are contiguous in sorted order
        middle = (low + high) // 2
        if keys[middle].startswith(prefix) or keys[middle] < prefix:
            low = middle + 1
        else:
            high = middle
    return low


def list_keys(
    keys: Sequence[str],
    *,
    prefix: str = "",
    delimiter: str = "",
    max_keys: int = 1000,
    start_after: str = "",
    continuation_token: str | None = None,
) -> Listing:
    """One page of a listing over the sorted ``keys`` (see the module docstring)."""
    if not isinstance(max_keys, int) or not 0 <= max_keys <= MAX_KEYS_MAX:
        raise InvalidArgument(f"max_keys must be in [0, {MAX_KEYS_MAX}]")
    if max_keys == 0:
        return Listing((), (), False, None)
    kind, marker = _decode_token(continuation_token) if continuation_token else ("k", start_after)
    position = bisect.bisect_right(keys, marker) if marker else 0
    if kind == "p":
        position = after_prefix(keys, marker, position)
    position = max(position, bisect.bisect_left(keys, prefix))
    found: list[str] = []
    prefixes: list[str] = []
    last: tuple[str, str] | None = None
    while position < len(keys) and keys[position].startswith(prefix):
        if len(found) + len(prefixes) >= max_keys:
            assert last is not None
            return Listing(tuple(found), tuple(prefixes), True, _encode_token(*last))
        key = keys[position]
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            rolled = key[: cut + len(delimiter)]
            prefixes.append(rolled)
            last = ("p", rolled)
            position = after_prefix(keys, rolled, position)
        else:
            found.append(key)
            last = ("k", key)
            position += 1
    return Listing(tuple(found), tuple(prefixes), False, None)


def resolve_range(byte_range: tuple[int, int] | None, size: int) -> tuple[int, int]:
    """The half-open ``[start, stop)`` slice an inclusive range selects from ``size`` bytes.

    ``(first, last)`` with ``last`` past the end is clipped; a negative ``first`` means the
    last ``-first`` bytes (an HTTP suffix range ``bytes=-N``). ``InvalidArgument`` when the
    range selects nothing (HTTP 416)."""
    if byte_range is None:
        return 0, size
    first, last = byte_range
    if first < 0:
        if last != -1 or first == 0:
            raise InvalidArgument("a suffix range is (-N, -1)")
        if size == 0:
            raise InvalidArgument("range not satisfiable on an empty object")
        return max(0, size + first), size
    if last < first or first >= size:
        raise InvalidArgument(f"range {first}-{last} not satisfiable for {size} bytes")
    return first, min(last + 1, size)
