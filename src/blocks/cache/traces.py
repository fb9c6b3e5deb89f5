"""Trace files for the simulator: parsing, bounded and strict.

Formats (one request per line unless said otherwise; blank lines and ``#`` comments skipped):

* ``lirs``: one integer block number per line, as in the LIRS paper's traces. A line holding
  only ``*`` ends the trace (some files mark their end that way).
* ``arc``: ``start count ignored request_id`` per line, as in the ARC paper's traces; the line
  stands for ``count`` requests to blocks ``start .. start+count-1``.
* ``text``: each line, stripped, is a string key.

Files ending in ``.gz`` are decompressed on the fly. ``format="auto"`` picks ``arc`` for names
containing ``.arc``, ``text`` for ``.txt``, and ``lirs`` otherwise. Every parser stops with
``InvalidArgument`` naming the line at the first malformed line, and refuses traces longer than
``requests_max`` so that a wrong file cannot exhaust memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path

from blocks.core.errors import InvalidArgument

__all__ = ["FORMATS", "REQUESTS_MAX", "load_trace", "parse_lines"]

FORMATS = ("lirs", "arc", "text")
REQUESTS_MAX = 50_000_000
_ARC_RUN_MAX = 1_000_000


def _lirs(lines: Iterable[str]) -> Iterator[Hashable]:
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text == "*":
            return
        try:
            yield int(text)
        except ValueError:
            raise InvalidArgument(
                f"line {number}: expected an integer, got {text[:40]!r}"
            ) from None


def _arc(lines: Iterable[str]) -> Iterator[Hashable]:
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) < 2:
            raise InvalidArgument(f"line {number}: expected 'start count ...', got {text[:40]!r}")
        try:
            start, count = int(fields[0]), int(fields[1])
        except ValueError:
            raise InvalidArgument(f"line {number}: start and count must be integers") from None
        if not 1 <= count <= _ARC_RUN_MAX:
            raise InvalidArgument(f"line {number}: count must be in [1, {_ARC_RUN_MAX}]")
        yield from range(start, start + count)


def _text(lines: Iterable[str]) -> Iterator[Hashable]:
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


_PARSERS = {"lirs": _lirs, "arc": _arc, "text": _text}


def parse_lines(
    lines: Iterable[str], trace_format: str = "lirs", *, requests_max: int = REQUESTS_MAX
) -> list[Hashable]:
    """Parse ``lines`` in ``trace_format`` into a list of keys (at most ``requests_max``)."""
    parser = _PARSERS.get(trace_format)
    if parser is None:
        raise InvalidArgument(f"unknown trace format {trace_format!r}; known: {', '.join(FORMATS)}")
    trace: list[Hashable] = []
    for key in parser(lines):
        if len(trace) >= requests_max:
            raise InvalidArgument(f"trace has more than {requests_max} requests")
        trace.append(key)
    return trace


def _detect(path: Path) -> str:
    name = path.name.lower()
    if ".arc" in name:
        return "arc"
    if ".txt" in name:
        return "text"
    return "lirs"


def load_trace(
    path: str | Path, trace_format: str = "auto", *, requests_max: int = REQUESTS_MAX
) -> list[Hashable]:
    """Read a trace file (optionally gzip-compressed) into a list of keys."""
    path = Path(path)
    chosen = _detect(path) if trace_format == "auto" else trace_format
    if not path.is_file():
        raise InvalidArgument(f"trace file {str(path)!r} does not exist")
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", errors="strict") as handle:
                return parse_lines(handle, chosen, requests_max=requests_max)
        with open(path, encoding="utf-8", errors="strict") as handle:
            return parse_lines(handle, chosen, requests_max=requests_max)
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"cannot read trace {str(path)!r}: {error}") from None
