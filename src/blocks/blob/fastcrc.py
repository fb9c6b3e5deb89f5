"""CRC32, CRC32C and CRC64NVME at memory speed, from ISA-L when it can be loaded.

Theory of operation. The erasure codec's wheel (``pyeclib``) ships Intel's ISA-L, whose
CRCs use carry-less multiplication (tens of GB/s on one core, where zlib's CRC32 makes
about 1 GB/s and a table in Python about 10 MB/s). ``load`` finds that library (beside
``pyeclib``, else a system ``libisal``), binds the three functions with ``ctypes`` (which
lets go of the GIL for the call, as zlib and hashlib do for large buffers) and returns
them; ``None`` when there is none, and ``checksums`` then keeps zlib and its tables. Each
function continues from a previous result exactly as ``zlib.crc32(data, value)`` does;
tests compare them with zlib and with the table-driven versions.

Buffers under ``UNLOCKED_BYTES_MIN`` go through a second binding that keeps the GIL
(``ctypes.PyDLL``): letting it go and taking it back costs more than their CRC, and on a
busy server the event loop can lose the GIL to another thread for a switch interval. A
buffer is passed by address: ``bytes`` as they are, a writable buffer through
``ctypes.c_char.from_buffer``, anything else (a read-only view) copied to ``bytes`` first,
which still costs less than zlib's CRC of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FastCrcs", "load"]

_MASK32 = 0xFFFFFFFF
UNLOCKED_BYTES_MIN = 64 * 1024
"""From this size a CRC runs with the GIL let go (as zlib's does from 5 KiB)."""
_SLICE_BYTES = 1 << 30  # crc32_iscsi takes an int length


@dataclass(frozen=True)
class FastCrcs:
    """``crc32``, ``crc32c`` and ``crc64nvme`` as ``(data, value) -> value``."""

    crc32: Callable[[Any, int], int]
    crc32c: Callable[[Any, int], int]
    crc64nvme: Callable[[Any, int], int]
    path: str


def _buffer(data: Any) -> tuple[Any, int]:
    """``data`` as something ``ctypes`` passes by address, and its length in bytes."""
    if isinstance(data, bytes):
        return data, len(data)
    view = memoryview(data)
    size = view.nbytes
    if not view.readonly and view.c_contiguous:
        return (ctypes.c_char * size).from_buffer(view.cast("B")), size
    return view.tobytes(), size


def _candidates() -> list[str]:
    found: list[str] = []
    with contextlib.suppress(ImportError):
        import pyeclib  # the erasure codec's wheel carries ISA-L

        libs = Path(pyeclib.__file__).resolve().parent.parent / "pyeclib.libs"
        found += [str(path) for path in sorted(libs.glob("libisal*.so*"))]
    system = ctypes.util.find_library("isal")
    if system:
        found.append(system)
    return found


def load() -> FastCrcs | None:
    """ISA-L's CRCs if a library with all three loads, else ``None``."""
    for path in _candidates():
        try:
            unlocked, locked = _bind(ctypes.CDLL(path)), _bind(ctypes.PyDLL(path))
        except (OSError, AttributeError):
            continue

        def crc32(data: Any, value: int = 0, fast: Any = unlocked, small: Any = locked) -> int:
            buffer, size = _buffer(data)
            gzip = (fast if size >= UNLOCKED_BYTES_MIN else small)[0]
            return int(gzip(value, buffer, size))

        def crc32c(data: Any, value: int = 0, fast: Any = unlocked, small: Any = locked) -> int:
            buffer, size = _buffer(data)
            iscsi = (fast if size >= UNLOCKED_BYTES_MIN else small)[1]
            state = value ^ _MASK32
            if size <= _SLICE_BYTES:
                return int(iscsi(buffer, size, state)) ^ _MASK32
            view = memoryview(buffer).cast("B")
            for start in range(0, size, _SLICE_BYTES):
                piece = view[start : start + _SLICE_BYTES]
                state = int(iscsi(piece.tobytes(), len(piece), state))
            return state ^ _MASK32

        def crc64nvme(data: Any, value: int = 0, fast: Any = unlocked, small: Any = locked) -> int:
            buffer, size = _buffer(data)
            rocksoft = (fast if size >= UNLOCKED_BYTES_MIN else small)[2]
            return int(rocksoft(value, buffer, size))

        crcs = FastCrcs(crc32, crc32c, crc64nvme, path)
        if _agrees(crcs):
            return crcs
    return None


def _bind(library: ctypes.CDLL) -> tuple[Any, Any, Any]:
    """The library's CRC32 (gzip), CRC32C (iSCSI) and CRC64 (Rocksoft, NVMe's) functions
    with their C signatures; ``AttributeError`` if one is missing."""
    gzip, iscsi = library.crc32_gzip_refl, library.crc32_iscsi
    rocksoft = library.crc64_rocksoft_refl
    gzip.restype = ctypes.c_uint32
    gzip.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint64]
    iscsi.restype = ctypes.c_uint32
    iscsi.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]
    rocksoft.restype = ctypes.c_uint64
    rocksoft.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_uint64]
    return gzip, iscsi, rocksoft


def _agrees(crcs: FastCrcs) -> bool:
    """The published check values (``b"123456789"``), so a library of another convention is
    never used."""
    check = b"123456789"
    return (
        crcs.crc32(check, 0) == 0xCBF43926
        and crcs.crc32c(check, 0) == 0xE3069283
        and crcs.crc64nvme(check, 0) == 0xAE8B14860A799888
    )
