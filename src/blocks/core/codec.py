"""msgpack encoding with size limits and typed errors.

Every payload that crosses a process boundary (user values, internal messages, log records)
goes through ``pack``/``unpack``. Two rules make this boundary safe:

* Only msgpack's own types travel: ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``,
  ``bytes``, ``list``/``tuple`` (decoded as ``list``), and ``dict``. Anything else is refused
  with ``InvalidArgument`` instead of being pickled or silently stringified.
* Sizes are bounded on both sides: ``pack`` refuses output above ``size_max`` and ``unpack``
  refuses input above it *before* decoding, and msgpack's own per-container limits are set
  from the same number, so a hostile 5-byte header cannot make us allocate gigabytes.

Bytes that do not decode (truncated, trailing garbage, invalid msgpack) raise
``InvalidArgument`` from ``unpack``; callers that receive bytes from a peer translate that to
``PeerError`` where the distinction matters.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from blocks.core.errors import InvalidArgument

__all__ = ["DEFAULT_SIZE_MAX", "pack", "unpack"]

DEFAULT_SIZE_MAX = 64 * 1024 * 1024
"""Default bound on an encoded payload, in bytes (64 MiB)."""


def _refuse(obj: Any) -> Any:
    if isinstance(obj, int):
        raise InvalidArgument(f"integer {obj} does not fit in 64 bits")
    raise InvalidArgument(f"cannot encode value of type {type(obj).__name__}")


_local = threading.local()  # one reused encoder per thread: a ``Packer`` is not thread-safe


def _packer() -> msgpack.Packer:
    packer: msgpack.Packer = msgpack.Packer(use_bin_type=True, default=_refuse, strict_types=False)
    _local.packer = packer
    return packer


def pack(value: Any, *, size_max: int = DEFAULT_SIZE_MAX) -> bytes:
    """Encode ``value`` as msgpack; raise ``InvalidArgument`` for other types or oversize output.

    The thread's reused ``Packer`` writes exactly what ``msgpack.packb`` with the same options
    writes (it empties its buffer after each value, and after a value it refused).
    """
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _packer()
    try:
        data: bytes = packer.pack(value)
    except InvalidArgument:
        raise
    except (TypeError, ValueError, OverflowError) as error:
        raise InvalidArgument(f"cannot encode value: {error}") from None
    if len(data) > size_max:
        raise InvalidArgument(f"encoded size {len(data)} bytes exceeds the limit of {size_max}")
    return data


def unpack(data: bytes | bytearray | memoryview, *, size_max: int = DEFAULT_SIZE_MAX) -> Any:
    """Decode exactly one msgpack value from ``data``.

    Raises ``InvalidArgument`` when ``data`` is larger than ``size_max``, truncated, has
    trailing bytes, or is not valid msgpack. Maps decode with any hashable keys msgpack allows;
    arrays decode as lists.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"expected bytes, got {type(data).__name__}")
    if len(data) > size_max:
        raise InvalidArgument(f"payload of {len(data)} bytes exceeds the limit of {size_max}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_bin_len=size_max,
            max_str_len=size_max,
            max_array_len=size_max,
            max_map_len=size_max // 2,
            max_ext_len=size_max,
        )
    except msgpack.ExtraData:
        raise InvalidArgument("trailing bytes after the msgpack value") from None
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise InvalidArgument(f"malformed msgpack: {type(error).__name__}") from None
