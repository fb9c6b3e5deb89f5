"""Idempotent-producer state of one ``(producer, topic, partition)``: its recent *runs*.

Theory of operation
-------------------
A producer numbers its records per partition 0, 1, 2, ... and may keep several batches in
flight at once (the client pipelines up to five, as Kafka's idempotent producer does). A
retry of any of those batches must be recognised as a duplicate *and* answered with the
offsets the original got. With one batch in flight it was enough to remember the last
sequence and its offset; with several, other producers' records may sit between this
producer's batches, so offsets no longer follow from sequences by one subtraction.

So the broker keeps, per producer and partition, the last ``RUNS_MAX`` *runs*: a run is a
stretch of records where sequence and offset grow together by one, ``(first_sequence,
first_offset, length)``. Consecutive batches of one producer with nobody in between merge
into one run, so a busy producer usually has a single run however many batches it sends.
A retried batch lies inside one run (a batch is written contiguously), and its original
first offset is ``first_offset + (sequence - first_sequence)``. A batch older than every kept
run cannot be answered and is refused with ``Conflict``; ``RUNS_MAX`` is above the client's
in-flight bound, so a retry from a well-behaved client is always within reach.

Everything here is pure: tuples in, tuples out.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["RUNS_MAX", "Run", "duplicate_offset", "extend", "last_sequence"]

RUNS_MAX = 8


class Run(NamedTuple):
    """Records ``first_sequence .. first_sequence + length - 1`` stored at
    ``first_offset .. first_offset + length - 1``."""

    first_sequence: int
    first_offset: int
    length: int


def last_sequence(runs: tuple[Run, ...]) -> int:
    """The newest sequence number stored (-1 for a producer with none)."""
    if not runs:
        return -1
    last = runs[-1]
    return last.first_sequence + last.length - 1


def extend(runs: tuple[Run, ...], sequence: int, offset: int, length: int) -> tuple[Run, ...]:
    """The runs after storing ``length`` records with sequences from ``sequence`` at offsets
    from ``offset`` (both contiguous); keeps the newest ``RUNS_MAX`` runs."""
    assert length >= 1
    if runs:
        last = runs[-1]
        if (
            sequence == last.first_sequence + last.length
            and offset == last.first_offset + last.length
        ):
            return (*runs[:-1], Run(last.first_sequence, last.first_offset, last.length + length))
    return (*runs, Run(sequence, offset, length))[-RUNS_MAX:]


def duplicate_offset(runs: tuple[Run, ...], sequence: int, length: int) -> int | None:
    """The original first offset of an already-stored batch ``sequence .. sequence + length -
    1``, or None when no kept run holds all of it."""
    for run in reversed(runs):
        if run.first_sequence <= sequence and sequence + length <= run.first_sequence + run.length:
            return run.first_offset + (sequence - run.first_sequence)
    return None
