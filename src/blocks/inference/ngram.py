"""N-gram lookup drafts for speculative decoding (no torch, no I/O).

Theory of operation: text generated from a context often repeats pieces of it (code,
quotes, lists, names). To draft the next tokens, find the latest earlier place where the
last ``n`` tokens occurred and propose the ``k`` tokens that followed them there. A lookup
is a *point mass* proposal (the draft distribution puts probability 1 on its token), for
which the speculative acceptance rule stays exact. The search looks back at most
``MAX_LOOKBACK_TOKENS`` tokens, so one proposal costs a bounded scan.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_LOOKBACK_TOKENS", "ngram_propose"]

MAX_LOOKBACK_TOKENS = 4096


def ngram_propose(context: Sequence[int], n: int, k: int) -> list[int]:
    """Up to ``k`` tokens that followed the latest earlier match of the last ``n`` tokens."""
    if n < 1 or k < 1 or len(context) <= n:
        return []
    tail = list(context[-n:])
    last = tail[-1]
    lowest = max(0, len(context) - MAX_LOOKBACK_TOKENS)
    # ``end`` is where a candidate match ends; it must leave at least one token after it.
    for end in range(len(context) - 2, lowest + n - 2, -1):
        if context[end] == last and list(context[end - n + 1 : end + 1]) == tail:
            return list(context[end + 1 : end + 1 + k])
    return []
