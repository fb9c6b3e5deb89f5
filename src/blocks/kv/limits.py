"""Limits and input validation shared by every kv implementation.

Keys are ``bytes`` (or ``str``, stored as its UTF-8 encoding) of at most ``KEY_BYTES_MAX``
bytes; values are bytes-like of at most the store's ``value_bytes_max``. Validation happens
before anything is written, so a refused call changes nothing.
"""

from __future__ import annotations

from typing import Any

from blocks.core.errors import InvalidArgument
from blocks.core.inputs import bytes_within

__all__ = [
    "BATCH_ITEMS_MAX",
    "KEY_BYTES_MAX",
    "VALUE_BYTES_MAX_DEFAULT",
    "VALUE_BYTES_MAX_LIMIT",
    "check_key",
    "check_value",
]

KEY_BYTES_MAX = 64 * 1024
VALUE_BYTES_MAX_DEFAULT = 16 * 1024 * 1024
VALUE_BYTES_MAX_LIMIT = 1024 * 1024 * 1024
"""Largest ``value_bytes_max`` a store accepts (the record format allows just under 4 GiB)."""

BATCH_ITEMS_MAX = 100_000
"""Most items one ``put_many``/``get_many`` call may carry."""

Key = bytes | str


def check_key(key: Any) -> bytes:
    """Return ``key`` as bytes, or raise ``InvalidArgument``."""
    if isinstance(key, bytes):
        encoded = key
    elif isinstance(key, str):
        try:
            encoded = key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument("key is not encodable as UTF-8") from None
    else:
        raise InvalidArgument(f"key must be bytes or str, not {type(key).__name__}")
    if len(encoded) > KEY_BYTES_MAX:
        raise InvalidArgument(f"key of {len(encoded)} bytes exceeds the limit of {KEY_BYTES_MAX}")
    return encoded


def check_value(value: Any, value_bytes_max: int) -> bytes:
    """Return ``value`` as bytes, or raise ``InvalidArgument``."""
    return bytes_within(value, "value", value_bytes_max)


def check_batch_size(count: int) -> None:
    if count > BATCH_ITEMS_MAX:
        raise InvalidArgument(f"batch of {count} items exceeds the limit of {BATCH_ITEMS_MAX}")
