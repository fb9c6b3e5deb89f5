"""Checks of caller input that more than one block makes in the same way.

Theory of operation: a block checks what a caller hands it before anything is written, so
that a refused call changes nothing and raises ``InvalidArgument`` (the caller's fault, never
an ``assert``). A check here is pure: it reads its argument and returns the value in the one
form the block stores.
"""

from __future__ import annotations

from blocks.core.errors import InvalidArgument

__all__ = ["bytes_within"]


def bytes_within(value: object, what: str, bytes_max: int, limit_name: str = "") -> bytes:
    """``value`` (``bytes``, or a ``bytearray``/``memoryview`` copied) as ``bytes``, if it is
    at most ``bytes_max`` long.

    Raises ``InvalidArgument`` naming ``what`` for any other type (``str`` included: text must
    be encoded by the caller) or a longer value; ``limit_name``, when given, names the setting
    that holds ``bytes_max`` in that message.
    """
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, bytearray | memoryview):
        data = bytes(value)
    else:
        raise InvalidArgument(f"{what} must be bytes, got {type(value).__name__}")
    if len(data) > bytes_max:
        setting = f" ({limit_name})" if limit_name else ""
        raise InvalidArgument(
            f"{what} of {len(data)} bytes exceeds the limit of {bytes_max}{setting}"
        )
    return data
