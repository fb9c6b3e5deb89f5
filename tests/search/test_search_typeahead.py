"""Typeahead against exact counting, and its memory bounds under churn."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from blocks.core.errors import InvalidArgument
from blocks.search import Typeahead

PHRASES = ["a", "ab", "abc", "abd", "b", "ba", "bab", "abcd", "aab", "ca"]


def top(counts: Counter[str], prefix: str, k: int) -> list[tuple[str, int]]:
    matches = [(p, c) for p, c in counts.items() if p.startswith(prefix)]
    return sorted(matches, key=lambda item: (-item[1], item[0]))[:k]


class TypeaheadMachine(RuleBasedStateMachine):
    """With capacity above the number of phrases, suggestions equal exact top-k counting."""

    def __init__(self) -> None:
        super().__init__()
        self.typeahead = Typeahead(k=3, capacity=64, prefix_chars_max=2)
        self.counts: Counter[str] = Counter()

    @rule(phrase=st.sampled_from(PHRASES), weight=st.integers(1, 3))
    def record(self, phrase: str, weight: int) -> None:
        self.typeahead.record(phrase, weight)
        self.counts[phrase] += weight

    @rule(prefix=st.sampled_from(["a", "ab", "abc", "b", "c", "z", "ba"]), k=st.integers(1, 3))
    def suggest(self, prefix: str, k: int) -> None:
        assert self.typeahead.suggest(prefix, k) == top(self.counts, prefix, k)

    @invariant()
    def size(self) -> None:
        assert len(self.typeahead) == len(self.counts)


TestTypeahead = TypeaheadMachine.TestCase
TestTypeahead.settings = settings(stateful_step_count=40)


@given(stream=st.lists(st.text(alphabet="ab", min_size=1, max_size=4), max_size=150))
def test_bounded_under_churn_and_cache_agrees_with_scan(stream: list[str]) -> None:
    typeahead = Typeahead(k=3, capacity=6, prefix_chars_max=3)
    for phrase in stream:
        typeahead.record(phrase)
        assert len(typeahead) <= 6
        assert typeahead.cached_prefixes() <= 6 * 3
        live = {p: typeahead.count(p) for p in set(stream) if typeahead.count(p)}
        for prefix in ("a", "b", "ab", "ba", "aa", phrase[:2]):
            expected = sorted(
                ((p, c) for p, c in live.items() if p.startswith(prefix)),
                key=lambda item: (-item[1], item[0]),
            )[:3]
            assert typeahead.suggest(prefix) == expected, prefix


def test_heavy_hitter_survives_a_flood_of_one_off_queries() -> None:
    typeahead = Typeahead(k=3, capacity=50)
    for i in range(5000):
        typeahead.record(f"noise {i}")
        if i % 10 == 0:
            typeahead.record("new york weather")
    assert typeahead.suggest("new")[0][0] == "new york weather"
    assert typeahead.count("new york weather") >= 500  # Space-Saving never under-counts
    assert len(typeahead) == 50


def test_normalisation_decay_and_bad_input() -> None:
    typeahead = Typeahead(k=2)
    typeahead.record("  New   York ", 4)
    typeahead.record("new york")
    assert typeahead.suggest("NEW Y") == [("new york", 5)]
    assert typeahead.decay(0.5) == 0
    assert typeahead.count("new york") == 2
    typeahead.record("newark")
    assert typeahead.decay(0.5) == 1  # newark: int(1 * 0.5) == 0, forgotten
    assert typeahead.suggest("new") == [("new york", 1)]
    for call in (
        lambda: typeahead.record("", 1),
        lambda: typeahead.record("x", 0),
        lambda: typeahead.suggest(""),
        lambda: typeahead.suggest("a", 3),
        lambda: typeahead.decay(1.5),
    ):
        with pytest.raises(InvalidArgument):
            call()  # type: ignore[no-untyped-call]
