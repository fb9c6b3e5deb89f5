"""Count-Min sketches as bytes, for gossip and snapshots (``countmin`` has no codec of its own).

A sketch travels as ``[width, depth, seed, total, zlib(rows)]``: the rows are the ``int64``
cells, row after row, little-endian; zlib because a sketch of a few thousand items is mostly
zero cells. ``countmin_from_wire`` checks every field and the cell arithmetic (no negative
cell, every row summing to ``total``) and raises ``PeerError`` for anything else, so a peer
or a damaged snapshot cannot plant an impossible sketch.

These helpers reach into ``CountMinSketch``'s row arrays; ``tests/counters`` round-trips them
so that a change to the sketch's layout fails there first.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from typing import Any

from blocks.core.errors import InvalidArgument, PeerError
from blocks.counters.countmin import CountMinSketch

__all__ = ["SKETCH_WIRE_BYTES_MAX", "countmin_from_wire", "countmin_to_wire"]

SKETCH_WIRE_BYTES_MAX = 4 * 1024 * 1024
"""Largest uncompressed row table accepted from a peer or a snapshot."""


def countmin_to_wire(sketch: CountMinSketch) -> list[Any]:
    rows = array("q")
    for row in sketch._rows:
        rows.extend(row)
    if sys.byteorder != "little":
        rows.byteswap()
    packed = zlib.compress(rows.tobytes(), 1)
    return [sketch.width, sketch.depth, sketch._seed, sketch.total, packed]


def countmin_from_wire(wire: Any) -> CountMinSketch:
    """Rebuild a sketch from ``countmin_to_wire``; ``PeerError`` for anything malformed."""
    if not isinstance(wire, list) or len(wire) != 5:
        raise PeerError("a count-min sketch is [width, depth, seed, total, rows]")
    width, depth, seed, total, packed = wire
    if not all(type(v) is int for v in (width, depth, seed, total)) or not isinstance(
        packed, bytes
    ):
        raise PeerError("count-min sketch fields have the wrong types")
    if width * depth * 8 > SKETCH_WIRE_BYTES_MAX or total < 0:
        raise PeerError("count-min sketch too large or negative total")
    try:
        sketch = CountMinSketch(width, depth, seed=seed)
        decompressor = zlib.decompressobj()
        raw = decompressor.decompress(packed, width * depth * 8 + 1)
    except (InvalidArgument, zlib.error) as error:
        raise PeerError(f"count-min sketch does not decode: {error}") from None
    if len(raw) != width * depth * 8 or not decompressor.eof or decompressor.unused_data:
        raise PeerError("count-min sketch rows have the wrong length")
    cells = array("q")
    cells.frombytes(raw)
    if sys.byteorder != "little":
        cells.byteswap()
    rows = [cells[r * width : (r + 1) * width] for r in range(depth)]
    if any(min(row) < 0 or sum(row) != total for row in rows):
        raise PeerError("count-min sketch rows do not add up to its total")
    sketch._rows = rows
    sketch._total = total
    return sketch
