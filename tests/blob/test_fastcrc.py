"""ISA-L's CRCs (``fastcrc``) give exactly what zlib and the table-driven CRCs give, for
every kind of buffer and when continued from a previous value, and the checksum hashers
use them."""

from __future__ import annotations

import os
import zlib

import pytest

from blocks.blob import checksums, fastcrc
from blocks.blob.checksums import crc32c, crc64nvme

CRCS = fastcrc.load()
needs_isal = pytest.mark.skipif(CRCS is None, reason="no ISA-L library to load")


@needs_isal
@pytest.mark.parametrize("size", [0, 1, 7, 64, 4097, 70_001])
def test_the_fast_crcs_agree_with_zlib_and_the_tables(size: int) -> None:
    assert CRCS is not None
    data = os.urandom(size)
    views = [data, bytearray(data), memoryview(data), memoryview(bytearray(data))]
    for value in (0, 1, 0xDEADBEEF):
        for view in views:
            assert CRCS.crc32(view, value) == zlib.crc32(data, value)
            if size <= 4097:  # the tables are slow
                assert CRCS.crc32c(view, value) == crc32c(data, value)
                assert CRCS.crc64nvme(view, value) == crc64nvme(data, value)
    cut = size // 3
    assert CRCS.crc32(data[cut:], CRCS.crc32(data[:cut], 0)) == zlib.crc32(data)
    assert CRCS.crc32c(data[cut:], CRCS.crc32c(data[:cut], 0)) == CRCS.crc32c(data, 0)
    assert CRCS.crc64nvme(data[cut:], CRCS.crc64nvme(data[:cut], 0)) == CRCS.crc64nvme(data, 0)
    assert CRCS.crc32(memoryview(data)[1:], 0) == zlib.crc32(data[1:])


@needs_isal
def test_the_hashers_use_them() -> None:
    assert checksums._FAST is not None and checksums._CRCS["crc32"] is checksums._FAST.crc32
    for name, check in (
        ("crc32", "cbf43926"),
        ("crc32c", "e3069283"),
        ("crc64nvme", "ae8b14860a799888"),
    ):
        hasher = checksums.new_hasher(name)
        assert hasher is not None
        for piece in (b"1234", bytearray(b"5"), memoryview(b"6789")):
            hasher.update(piece)
        assert hasher.digest().hex() == check
