"""``Typeahead``: prefix -> top-k completions by count, learned from the query stream.

Theory of operation. The design is the classic one: count queries, and keep for every prefix
a cached list of its ``k`` most frequent completions so a keystroke is a dict lookup rather
than a scan. Everything is bounded:

* at most ``capacity`` phrases are counted. When a new phrase arrives at a full table, the
  least-counted phrase is evicted and the newcomer inherits its count plus the new weight
  (the Space-Saving heavy-hitters rule: a phrase's count over-estimates its true count by at
  most the evicted count, and any phrase more frequent than ``total / capacity`` is kept);
* phrases are normalised (case-folded, whitespace collapsed) and cut to
  ``phrase_chars_max``; only prefixes up to ``prefix_chars_max`` characters get a cache;
* a cache exists only for a prefix of some live phrase, and holds at most ``k`` entries, so
  caches hold at most ``capacity * prefix_chars_max * k`` references.

Cache invariant: a cached list is exactly the top ``k`` by (count desc, phrase asc) among
live phrases with that prefix. ``record`` keeps it by inserting or re-ranking the recorded
phrase in each of its prefixes' caches (other counts did not change); an eviction removes
the victim from its prefixes' caches and drops any cache that was full, because its
``k+1``-th entry is unknown. A missing cache is rebuilt on demand from a sorted list of
phrases (bisect to the prefix range). ``decay`` scales all counts to favour recent queries.
"""

from __future__ import annotations

import bisect
import heapq
import re

from blocks.core.errors import InvalidArgument
from blocks.search.tokenize import normalize_text

__all__ = ["Typeahead"]

_SPACES = re.compile(r"\s+")


class Typeahead:
    """Top-k completions of a prefix; see the module docstring."""

    def __init__(
        self,
        *,
        k: int = 10,
        capacity: int = 100_000,
        prefix_chars_max: int = 32,
        phrase_chars_max: int = 128,
    ) -> None:
        if not (1 <= k <= 1000 and capacity >= 1 and prefix_chars_max >= 1):
            raise InvalidArgument("need 1 <= k <= 1000, capacity >= 1, prefix_chars_max >= 1")
        if phrase_chars_max < prefix_chars_max:
            raise InvalidArgument("phrase_chars_max must be >= prefix_chars_max")
        self.k, self.capacity = k, capacity
        self.prefix_chars_max, self.phrase_chars_max = prefix_chars_max, phrase_chars_max
        self._counts: dict[str, int] = {}
        self._sorted: list[str] = []
        self._heap: list[tuple[int, str]] = []  # lazy min-heap of (count, phrase)
        self._cache: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, phrase: str) -> int:
        return self._counts.get(self._normalize(phrase), 0)

    def cached_prefixes(self) -> int:
        return len(self._cache)

    def _normalize(self, phrase: str) -> str:
        text = _SPACES.sub(" ", normalize_text(phrase)).strip()
        return text[: self.phrase_chars_max].rstrip()

    def _rank(self, phrase: str) -> tuple[int, str]:
        return (-self._counts[phrase], phrase)

    def _prefixes(self, phrase: str) -> list[str]:
        return [phrase[:n] for n in range(1, min(len(phrase), self.prefix_chars_max) + 1)]

    def record(self, phrase: str, weight: int = 1) -> None:
        """Count one occurrence (or ``weight``) of ``phrase``."""
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise InvalidArgument(f"weight must be a positive integer, got {weight!r}")
        text = self._normalize(phrase)
        if not text:
            raise InvalidArgument("cannot record an empty phrase")
        if text in self._counts:
            self._counts[text] += weight
        else:
            floor = self._evict() if len(self._counts) >= self.capacity else 0
            self._counts[text] = floor + weight
            bisect.insort(self._sorted, text)
        heapq.heappush(self._heap, (self._counts[text], text))
        if len(self._heap) > 4 * self.capacity + 16:
            self._heap = [(c, p) for p, c in self._counts.items()]
            heapq.heapify(self._heap)
        self._promote(text)

    def _evict(self) -> int:
        while True:
            count, victim = heapq.heappop(self._heap)
            if self._counts.get(victim) == count:
                break
        del self._counts[victim]
        del self._sorted[bisect.bisect_left(self._sorted, victim)]
        for prefix in self._prefixes(victim):
            cached = self._cache.get(prefix)
            if cached is None or victim not in cached:
                continue
            if len(cached) >= self.k:
                del self._cache[prefix]  # its k+1-th entry is unknown: rebuild on demand
            else:
                cached.remove(victim)
                if not cached:
                    del self._cache[prefix]
        return count

    def _promote(self, phrase: str) -> None:
        rank = self._rank(phrase)
        for prefix in self._prefixes(phrase):
            cached = self._cache.get(prefix)
            if cached is None:
                continue
            if phrase in cached:
                cached.sort(key=self._rank)
            elif len(cached) < self.k:
                cached.append(phrase)
                cached.sort(key=self._rank)
            elif rank < self._rank(cached[-1]):
                cached[-1] = phrase
                cached.sort(key=self._rank)

    def _scan(self, prefix: str, k: int) -> list[str]:
        start = bisect.bisect_left(self._sorted, prefix)
        matches: list[str] = []
        for phrase in self._sorted[start:]:
            if not phrase.startswith(prefix):
                break
            matches.append(phrase)
        return heapq.nsmallest(k, matches, key=self._rank)

    def suggest(self, prefix: str, k: int | None = None) -> list[tuple[str, int]]:
        """Up to ``k`` (default ``self.k``) completions of ``prefix`` with their counts."""
        wanted = self.k if k is None else k
        if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= self.k:
            raise InvalidArgument(f"k must be in 1..{self.k}")
        text = _SPACES.sub(" ", normalize_text(prefix)).lstrip()[: self.phrase_chars_max]
        if not text:
            raise InvalidArgument("prefix must not be empty")
        cached = self._cache.get(text)
        if cached is None:
            cached = self._scan(text, self.k)
            if cached and len(text) <= self.prefix_chars_max:
                self._cache[text] = cached
        return [(phrase, self._counts[phrase]) for phrase in cached[:wanted]]

    def counts(self) -> dict[str, int]:
        """Every counted phrase with its count (a copy: what a snapshot saves)."""
        return dict(self._counts)

    def restore(self, counts: dict[str, int]) -> None:
        """Count each phrase of ``counts`` again, least counted first (a snapshot's reload).

        On an empty table within ``capacity`` this gives back exactly the saved counts.
        """
        for phrase, count in sorted(counts.items(), key=lambda item: (item[1], item[0])):
            self.record(phrase, int(count))

    def decay(self, factor: float = 0.5) -> int:
        """Multiply every count by ``factor`` (rounding down), forget zeros; returns how many."""
        if not 0.0 <= factor < 1.0:
            raise InvalidArgument("factor must be in [0, 1)")
        scaled = {p: int(c * factor) for p, c in self._counts.items()}
        self._counts = {p: c for p, c in scaled.items() if c > 0}
        self._sorted = sorted(self._counts)
        self._heap = [(c, p) for p, c in self._counts.items()]
        heapq.heapify(self._heap)
        self._cache.clear()
        return len(scaled) - len(self._counts)
