"""A small checksummed file replaced atomically: the sequencer's durable state.

``write_state`` writes ``payload`` to a temporary file next to ``path``, fsyncs it, renames it
over ``path`` and fsyncs the directory, so after a crash the file holds either the old or the
new payload, whole. Each file is ``MAGIC | length (4 bytes) | payload | xxh64(payload)``;
``read_state`` raises ``Corruption`` when the checksum, length or magic is wrong and returns
``None`` when the file does not exist.
"""

from __future__ import annotations

import os
import struct

import xxhash

from blocks.core.errors import Corruption
from blocks.core.files import write_atomically

__all__ = ["STATE_BYTES_MAX", "read_state", "write_state"]

MAGIC = b"BSQ1"
STATE_BYTES_MAX = 1 << 20
_HEADER = struct.Struct(">4sI")
_CHECKSUM = struct.Struct(">Q")


def encode_state(payload: bytes) -> bytes:
    checksum = _CHECKSUM.pack(xxhash.xxh64_intdigest(payload))
    return _HEADER.pack(MAGIC, len(payload)) + payload + checksum


def decode_state(data: bytes) -> bytes:
    """The payload inside a state file's bytes; ``Corruption`` for anything malformed."""
    if len(data) < _HEADER.size + _CHECKSUM.size:
        raise Corruption("state file is truncated")
    magic, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise Corruption("state file has the wrong magic bytes")
    if len(data) != _HEADER.size + length + _CHECKSUM.size:
        raise Corruption("state file length does not match its header")
    payload = data[_HEADER.size : _HEADER.size + length]
    (checksum,) = _CHECKSUM.unpack_from(data, _HEADER.size + length)
    if checksum != xxhash.xxh64_intdigest(payload):
        raise Corruption("state file checksum mismatch")
    return payload


def read_state(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(STATE_BYTES_MAX + 1)
    except FileNotFoundError:
        return None
    if len(data) > STATE_BYTES_MAX:
        raise Corruption(f"state file {path} is larger than {STATE_BYTES_MAX} bytes")
    return decode_state(data)


def write_state(path: str, payload: bytes, *, fsync: bool = True) -> None:
    data = encode_state(payload)
    if fsync:
        write_atomically(path, data)  # temporary, fsync, rename, directory fsync
        return
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
