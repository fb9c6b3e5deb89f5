"""A GGUF file's metadata and tensor table, read straight from its bytes.

Theory of operation: a GGUF file (version 2 or 3, little-endian) is a header (magic,
version, tensor count, key count), the metadata keys (each a name, a type and a value:
a scalar, a string, or an array of either), the tensor table (name, dimensions innermost
first, ``GGMLQuantizationType``, offset into the data section), then the data section at
the next multiple of ``general.alignment`` (32 by default). The ``gguf`` package's own
``GGUFReader`` reads the same, but builds a numpy view for every part of every value:
for SmolLM2's 49,152 tokens and 48,900 merges that took ~7 s of a ~9 s model load on a
quiet core (minutes on a loaded one). Here a string array is one loop of
``struct.unpack_from`` over one ``bytes`` object, and a numeric array one
``numpy.frombuffer``; tensors are memory-mapped, nothing is copied.

Values come back as ``GGUFReader``'s ``ReaderField.contents()`` gives them: Python scalars
(``bool``, ``int``, ``float``, ``str``) and lists. A file that is not GGUF, a version or
value type this module does not know, or a table pointing past the file's end is
``Corruption``.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blocks.core.errors import Corruption

__all__ = ["GGUFFile", "GGUFTensor", "read_gguf"]

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
# value type -> (struct format, numpy dtype) of the fixed-size types; 8 = string, 9 = array
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"),
    1: ("<b", "<i1"),
    2: ("<H", "<u2"),
    3: ("<h", "<i2"),
    4: ("<I", "<u4"),
    5: ("<i", "<i4"),
    6: ("<f", "<f4"),
    7: ("<?", "<?"),
    10: ("<Q", "<u8"),
    11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True, slots=True)
class GGUFTensor:
    """One tensor of the table: ``shape`` as GGUF lists it (innermost dimension first),
    ``data`` its raw bytes (a read-only view of the file's memory map)."""

    name: str
    shape: tuple[int, ...]
    tensor_type: int
    data: np.ndarray  # uint8


@dataclass(frozen=True, slots=True)
class GGUFFile:
    """Metadata by key and tensors in file order."""

    fields: dict[str, Any]
    tensors: list[GGUFTensor]


class _Cursor:
    """Little-endian reads from ``buffer`` at a moving offset, bounds-checked."""

    def __init__(self, buffer: Any, path: str) -> None:
        self.buffer = buffer
        self.size = len(buffer)
        self.at = 0
        self.path = path

    def fail(self, what: str) -> Corruption:
        return Corruption(f"{self.path}: {what} at byte {self.at}")

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > self.size:
            raise self.fail("truncated")
        (value,) = struct.unpack_from(fmt, self.buffer, self.at)
        self.at += size
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        end = self.at + length
        if end > self.size:
            raise self.fail("string past the end of the file")
        text = _decode(self.buffer[self.at : end], self)
        self.at = end
        return text

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            return self.array()
        if kind not in _SCALARS:
            raise self.fail(f"unknown value type {kind}")
        return self.unpack(_SCALARS[kind][0])

    def array(self) -> list[Any]:
        kind, count = self.unpack("<I"), self.unpack("<Q")
        if kind == _STRING:
            return self.strings(count)
        if kind == _ARRAY:
            return [self.array() for _ in range(count)]
        if kind not in _SCALARS:
            raise self.fail(f"unknown array element type {kind}")
        dtype = np.dtype(_SCALARS[kind][1])
        end = self.at + count * dtype.itemsize
        if end > self.size:
            raise self.fail("array past the end of the file")
        values: list[Any] = np.frombuffer(self.buffer, dtype, count, self.at).tolist()
        self.at = end
        return values

    def strings(self, count: int) -> list[str]:
        """``count`` strings in one loop: the hot path for a tokenizer's vocabulary."""
        buffer, at, size, unpack_from = self.buffer, self.at, self.size, struct.unpack_from
        out = []
        for _ in range(count):
            if at + 8 > size:
                self.at = at
                raise self.fail("truncated string array")
            (length,) = unpack_from("<Q", buffer, at)
            at += 8
            end = at + length
            if end > size:
                self.at = at
                raise self.fail("string past the end of the file")
            out.append(_decode(buffer[at:end], self))
            at = end
        self.at = at
        return out


def _decode(raw: bytes, cursor: _Cursor) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise cursor.fail("a string that is not UTF-8") from error


def _tensor_bytes(elements: int, tensor_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        values, size = GGML_QUANT_SIZES[GGMLQuantizationType(tensor_type)]
    except (KeyError, ValueError):
        # An unknown type: no size to check; the loader refuses the type by its number.
        return 0
    return elements * size // values


def read_gguf(path: str | Path) -> GGUFFile:
    """Metadata and tensor table of the GGUF file at ``path`` (see the module docstring)."""
    name = str(path)
    with open(path, "rb") as file:
        try:
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as error:  # an empty file cannot be mapped
            raise Corruption(f"{name}: not a GGUF file (empty)") from error
    cursor = _Cursor(mapped, name)
    if cursor.size < 24 or mapped[:4] != _MAGIC:
        raise Corruption(f"{name}: not a GGUF file (bad magic)")
    cursor.at = 4
    version = cursor.unpack("<I")
    if version not in (2, 3):
        raise Corruption(f"{name}: GGUF version {version} is not supported (2 and 3 are)")
    tensor_count, key_count = cursor.unpack("<Q"), cursor.unpack("<Q")
    fields: dict[str, Any] = {}
    for _ in range(key_count):
        key = cursor.string()
        fields[key] = cursor.value(cursor.unpack("<I"))
    table = []
    for _ in range(tensor_count):
        tensor_name = cursor.string()
        dims = tuple(cursor.unpack("<Q") for _ in range(cursor.unpack("<I")))
        table.append((tensor_name, dims, cursor.unpack("<I"), cursor.unpack("<Q")))
    alignment = int(fields.get("general.alignment", _DEFAULT_ALIGNMENT))
    if alignment < 1 or alignment & (alignment - 1):
        raise Corruption(f"{name}: alignment {alignment} is not a power of two")
    start = -(-cursor.at // alignment) * alignment
    whole = np.frombuffer(mapped, np.uint8)
    tensors = []
    for tensor_name, dims, tensor_type, offset in table:
        elements = int(np.prod(dims)) if dims else 1
        size = _tensor_bytes(elements, tensor_type)
        first = start + offset
        if first + size > cursor.size:
            raise Corruption(f"{name}: tensor {tensor_name} lies past the end of the file")
        tensors.append(GGUFTensor(tensor_name, dims, tensor_type, whole[first : first + size]))
    return GGUFFile(fields, tensors)
