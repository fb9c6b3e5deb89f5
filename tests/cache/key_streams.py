"""Hypothesis strategies for long key streams, drawn as one byte string.

A list of 1,000 integers costs Hypothesis 1,000 draws to generate; a byte string of the same
length is one. The policy tests check a fast path against a model over streams of hundreds of
keys, where generating the stream, not checking it, took the time (about 20 of the 21 s of
``test_long_runs_of_buffered_hits_decide_like_immediate_ones`` at 150 examples). Each key is
read from two bytes, so a failing stream still shrinks: bytes shrink towards zero and keys
towards 0, and the stream towards its shortest failing prefix.
"""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["key_lists"]

_SPAN = 1 << 16


def _keys(data: bytes, keys: int, hot_keys: int, hot_threshold: int) -> list[int]:
    values = [(data[i] << 8) | data[i + 1] for i in range(0, len(data) - 1, 2)]
    return [v % hot_keys if v < hot_threshold else v % keys for v in values]


def key_lists(
    keys: int, *, min_size: int, max_size: int, hot_keys: int = 1, hot_share: float = 0.0
) -> st.SearchStrategy[list[int]]:
    """Lists of ``min_size`` to ``max_size`` keys: with chance ``hot_share`` one of the first
    ``hot_keys`` keys, else uniform over ``range(keys)`` (uniform within 1 in 2**16 /
    ``keys``)."""
    assert 0 < keys <= 4096 and 0 < hot_keys <= keys and 0.0 <= hot_share <= 1.0
    threshold = round(hot_share * _SPAN)
    return st.binary(min_size=2 * min_size, max_size=2 * max_size + 1).map(
        lambda data: _keys(data, keys, hot_keys, threshold)
    )
