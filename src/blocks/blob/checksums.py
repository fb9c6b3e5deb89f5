"""S3's flexible checksums: the algorithms, their value format, and multipart composites.

Theory of operation. S3 names five checksum algorithms: CRC32 (zlib's), CRC32C
(Castagnoli), CRC64NVME, SHA-1 and SHA-256. A value is the big-endian digest in base64.
``new_hasher`` gives an object with ``update``/``digest`` for each; the SHAs use
``hashlib``, the three CRCs ISA-L's carry-less-multiply code where it loads (``fastcrc``:
the erasure codec's wheel ships it; about 8 GB/s for CRC32 against zlib's 1 GB/s, which
was a tenth of a large PUT's server CPU). Without it CRC32 uses ``zlib`` and CRC32C and
CRC64NVME are table-driven here (``crc32c``, ``crc64nvme``: bytes one at a time through a
256-entry table, about ``SLOW_CRC_BYTES_PER_S`` on a loaded core); those tables are also
the reference the fast ones are tested against. Both are checked against their published
check values (``b"123456789"``: CRC32C ``0xE3069283``, CRC64NVME ``0xAE8B14860A799888``).

A multipart upload's *composite* checksum is the checksum of the concatenated raw part
checksums, followed by ``-N`` (the number of parts): ``composite`` computes it.
``check_value`` refuses a value that is not the base64 of a digest of the algorithm's
size (S3's ``InvalidRequest``), so a malformed header never reaches a comparison.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from blocks.blob import fastcrc
from blocks.core.errors import InvalidArgument

__all__ = [
    "ALGORITHMS",
    "DIGEST_BYTES",
    "ChecksumMismatch",
    "Hasher",
    "check_value",
    "composite",
    "crc32c",
    "crc64nvme",
    "multipart_checksums",
    "new_hasher",
]

ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
DIGEST_BYTES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
SLOW_CRC_BYTES_PER_S = 10 * 1024 * 1024
"""Rough rate of the table-driven CRCs (documentation only: nothing waits on it)."""


class ChecksumMismatch(Exception):
    """A whole-object checksum named at a multipart completion that is not the composite
    (S3's BadDigest)."""


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


def _reflected_table(polynomial: int) -> tuple[int, ...]:
    """The byte table of a reflected CRC with the (reflected) ``polynomial``."""
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ polynomial if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_CRC32C_TABLE = _reflected_table(0x82F63B78)
_CRC64NVME_TABLE = _reflected_table(0x9A6C9329AC4BC9B5)
_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _update(table: tuple[int, ...], state: int, data: bytes | memoryview) -> int:
    for byte in bytes(data):
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


def crc32c(data: bytes | memoryview, value: int = 0) -> int:
    """CRC32C of ``data``, continuing from ``value`` (a previous result)."""
    return _update(_CRC32C_TABLE, value ^ _MASK32, data) ^ _MASK32


def crc64nvme(data: bytes | memoryview, value: int = 0) -> int:
    """CRC64NVME of ``data``, continuing from ``value`` (a previous result)."""
    return _update(_CRC64NVME_TABLE, value ^ _MASK64, data) ^ _MASK64


_FAST = fastcrc.load()
_CRCS: dict[str, Callable[[bytes | memoryview, int], int]] = (
    {"crc32": _FAST.crc32, "crc32c": _FAST.crc32c, "crc64nvme": _FAST.crc64nvme}
    if _FAST is not None
    else {"crc32": zlib.crc32, "crc32c": crc32c, "crc64nvme": crc64nvme}
)


class _Crc:
    def __init__(self, name: str) -> None:
        self._name = name
        self._crc = _CRCS[name]
        self._value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = self._crc(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(DIGEST_BYTES[self._name], "big")


def new_hasher(algorithm: str) -> Hasher | None:
    """A fresh hasher for one of ``ALGORITHMS`` (lowercase), ``None`` for anything else."""
    if algorithm in ("crc32", "crc32c", "crc64nvme"):
        return _Crc(algorithm)
    if algorithm == "sha1":
        return hashlib.sha1(usedforsecurity=False)
    if algorithm == "sha256":
        return hashlib.sha256()
    return None


def check_value(algorithm: str, value: str) -> bytes:
    """The raw digest a checksum header carries; ``ValueError`` unless ``value`` is the
    base64 of exactly ``DIGEST_BYTES[algorithm]`` bytes."""
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise ValueError(f"the {algorithm} checksum is not base64") from error
    if len(raw) != DIGEST_BYTES[algorithm]:
        raise ValueError(f"the {algorithm} checksum is not {DIGEST_BYTES[algorithm]} bytes")
    return raw


def composite(algorithm: str, part_values: Sequence[str]) -> str:
    """S3's multipart checksum: the checksum of the parts' raw checksums, ``-N``."""
    hasher = new_hasher(algorithm)
    assert hasher is not None, algorithm
    for value in part_values:
        hasher.update(check_value(algorithm, value))
    return f"{base64.b64encode(hasher.digest()).decode()}-{len(part_values)}"


def multipart_checksums(
    algorithm: str,
    parts: Sequence[tuple[int, Mapping[str, str]]],
    listed: Mapping[int, Mapping[str, str]],
    expected: Mapping[str, str],
) -> dict[str, str]:
    """The checksums a completed upload keeps: ``{algorithm: composite}`` when the upload
    asked for ``algorithm`` ("" for none: ``{}``). ``parts`` are the chosen parts' (number,
    checksums kept at UploadPart); ``listed`` the part checksums the completion request
    names, each of which must match (``InvalidArgument`` naming the part: S3's
    InvalidPart); ``expected`` the request's whole-object values, which must match the
    composite with or without its ``-N`` (``ChecksumMismatch``: S3's BadDigest)."""
    for number, named in listed.items():
        kept = dict(parts).get(number, {})
        for name, value in named.items():
            if kept.get(name) != value:
                raise InvalidArgument(f"part {number}'s {name} checksum differs from its upload")
    if not algorithm:
        if expected:
            raise InvalidArgument("checksum given at completion of an upload that asked none")
        return {}
    values = []
    for number, kept in parts:
        if algorithm not in kept:
            raise InvalidArgument(f"part {number} was uploaded without its {algorithm} checksum")
        values.append(kept[algorithm])
    value = composite(algorithm, values)
    for name, given in expected.items():
        if name != algorithm or given not in (value, value.rpartition("-")[0]):
            raise ChecksumMismatch(f"the {name} checksum does not match the parts' composite")
    return {algorithm: value}
