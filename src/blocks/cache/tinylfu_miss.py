"""W-TinyLFU's miss path: a newcomer enters the window, and a window overflow holds a duel.

Theory of operation (see ``blocks.cache.tinylfu`` for the policy as a whole). A miss admits
the new key to the window. Keys pushed out of the window are *candidates* for the main
area; when the cache is over its capacity a candidate duels the oldest probation key (the
*victim*, else the oldest protected key): the candidate wins only if the ``FrequencySketch``
says it is strictly more frequent, or, when it is already popular
(``ADMIT_POPULAR_FREQUENCY``) but loses, with chance ``ADMIT_POPULAR_CHANCE``, drawn from the
policy's injected ``random.Random``. The loser leaves the cache and is remembered in one of
the climber's two ghost lists: a refused candidate in the window's ghost (a larger window
would have kept it), an evicted victim, or a candidate with no victim at all, in the main
area's ghost.

Two implementations of the same steps, held to the same decisions by
``tests/cache/test_cache_tinylfu.py`` and both to a third one (``blocks.cache.fastsim``) by
``tests/cache/test_cache_fastsim.py``:

* ``insert_weighted``, the general one, for any weight: several keys may leave the window
  and several duels may be needed.
* ``insert`` with weight 1, the common case, in one frame: the window and the cache
  were within their bounds before and one entry leaves each, so at most one key moves from
  the window and at most one duel is held; the buffered hits are applied and counted
  together with the new key, and the duel's two sketch estimates are inlined. A refused
  candidate is judged before it would enter probation, so it never does.

These are functions over the policy's fields (as ``fastsim`` is) rather than methods, so
that ``TinyLfuPolicy`` stays one concept per module: its areas, hits and climber there, the
admission here.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from itertools import filterfalse
from typing import TYPE_CHECKING

from blocks.cache.sketch import COUNTER_MAX

if TYPE_CHECKING:
    from blocks.cache.tinylfu import TinyLfuPolicy

__all__ = [
    "ADMIT_POPULAR_CHANCE",
    "ADMIT_POPULAR_FREQUENCY",
    "SMALL_BATCH",
    "insert",
    "insert_weighted",
]

ADMIT_POPULAR_FREQUENCY = 6
"""A candidate estimated at least this frequent may win a lost duel anyway..."""
ADMIT_POPULAR_CHANCE = 1.0 / 128.0
"""...with this chance, so that colliding keys cannot pin the main area."""
SMALL_BATCH = 16
"""Below this many buffered hits a batch is applied one hit at a time (cheaper than
deduplicating)."""


def insert(policy: TinyLfuPolicy, key: Hashable, weight: int = 1) -> list[Hashable]:
    """``TinyLfuPolicy.insert`` itself (the class binds this function, so a miss costs no
    extra frame): a weight other than 1 goes to ``insert_weighted``; weight 1 takes the same
    steps in one frame."""
    if weight != 1:
        return insert_weighted(policy, key, weight)
    assert key not in policy._slots
    # A unit-weight miss, the common one, in one frame: drain the few buffered hits,
    # count them and the new key, move at most one key from the window to probation and
    # hold at most one duel (the window was within its bound and the cache within its
    # capacity before, and one entry leaves each). The same steps, in the same order, as
    # ``insert_weighted``; ``tests/cache/test_cache_fastsim.py`` checks both against a
    # third implementation.
    slots_of, sketch, reads = policy._slots, policy.sketch, policy.reads
    hits = len(reads)
    if hits:
        if hits < SMALL_BATCH and hits < policy._sample_size - policy._requests_in_sample:
            protected, window = policy._protected, policy._window
            for hit in reads:
                if hit in protected:
                    protected.move_to_end(hit)
                elif hit in window:
                    window.move_to_end(hit)
                else:
                    policy._promote(hit)
            policy._requests_in_sample += hits
        else:
            policy.drain_reads()
            hits = 0
    slots_of[key] = sketch.slots(key)
    reads.append(key)  # counted with the buffered hits, after them
    if sketch.additions + hits < sketch.sample_size:
        # No aging inside the batch (it may fall right after it): count inline.
        saturated, counters, door = sketch.saturated, sketch._counters, sketch._door
        for counted in filterfalse(saturated.__contains__, reads):
            first, first_bit, second, second_bit, a, b, c, d = slots_of[counted]
            if door[first] & first_bit and door[second] & second_bit:
                ca, cb, cc, cd = counters[a], counters[b], counters[c], counters[d]
                least = ca if ca < cb else cb
                if cc < least:
                    least = cc
                if cd < least:
                    least = cd
                if least < COUNTER_MAX:
                    grown = least + 1
                    if ca == least:
                        counters[a] = grown
                    if cb == least:
                        counters[b] = grown
                    if cc == least:
                        counters[c] = grown
                    if cd == least:
                        counters[d] = grown
                elif len(saturated) < sketch.saturated_max:
                    saturated.add(counted)
            else:
                door[first] |= first_bit
                door[second] |= second_bit
        sketch.additions += hits + 1
        if sketch.additions >= sketch.sample_size:
            sketch.age()
    else:
        sketch.add_many(reads, slots_of)
    reads.clear()
    if key in policy._window_ghost:
        del policy._window_ghost[key]
        policy._votes += 1
    elif key in policy._main_ghost:
        del policy._main_ghost[key]
        policy._votes -= 1
    window, probation = policy._window, policy._probation
    window[key] = 1
    window_weight = policy._window_weight + 1
    evicted: list[Hashable]
    if window_weight > policy._window_max:
        candidate, candidate_weight = window.popitem(last=False)
        policy._window_weight = window_weight = window_weight - candidate_weight
        if (
            policy._probation_weight + candidate_weight + policy._protected_weight + window_weight
            <= policy._capacity
        ):
            probation[candidate] = candidate_weight
            policy._probation_weight += candidate_weight
            evicted = []
        else:
            # ``_evict_one`` with one candidate, decided before it enters probation (so
            # a refused candidate never does): the victim is the oldest key of probation
            # as it was, else of protected.
            victim = next(iter(probation), None)
            victim_in_probation = victim is not None
            if victim is None:
                victim = next(iter(policy._protected), None)
            wins = False
            if victim is not None:
                # ``_admit(candidate, victim)``, with ``FrequencySketch.frequency``
                # inlined (aging may have replaced the arrays since the count above).
                saturated, counters, door = sketch.saturated, sketch._counters, sketch._door
                if candidate in saturated:
                    candidate_frequency = COUNTER_MAX + 1
                else:
                    first, first_bit, second, second_bit, a, b, c, d = slots_of[candidate]
                    candidate_frequency = counters[a]
                    if counters[b] < candidate_frequency:
                        candidate_frequency = counters[b]
                    if counters[c] < candidate_frequency:
                        candidate_frequency = counters[c]
                    if counters[d] < candidate_frequency:
                        candidate_frequency = counters[d]
                    if door[first] & first_bit and door[second] & second_bit:
                        candidate_frequency += 1
                if victim in saturated:
                    victim_frequency = COUNTER_MAX + 1
                else:
                    first, first_bit, second, second_bit, a, b, c, d = slots_of[victim]
                    victim_frequency = counters[a]
                    if counters[b] < victim_frequency:
                        victim_frequency = counters[b]
                    if counters[c] < victim_frequency:
                        victim_frequency = counters[c]
                    if counters[d] < victim_frequency:
                        victim_frequency = counters[d]
                    if door[first] & first_bit and door[second] & second_bit:
                        victim_frequency += 1
                if candidate_frequency > victim_frequency:
                    wins = True
                elif candidate_frequency >= ADMIT_POPULAR_FREQUENCY:
                    wins = policy._random.random() < ADMIT_POPULAR_CHANCE
            if wins:
                del slots_of[victim]
                if victim_in_probation:
                    policy._probation_weight -= probation.pop(victim)
                else:
                    policy._protected_weight -= policy._protected.pop(victim)
                probation[candidate] = candidate_weight
                policy._probation_weight += candidate_weight
                ghost, limit, evicted = policy._main_ghost, policy._main_ghost_max, [victim]
            else:
                del slots_of[candidate]
                # Refused at the duel: a larger window would have kept it; with no victim
                # at all, a larger main area would have had room for it.
                ghost, limit = (
                    (policy._main_ghost, policy._main_ghost_max)
                    if victim is None
                    else (policy._window_ghost, policy._window_ghost_max)
                )
                evicted = [candidate]
            ghost[evicted[0]] = None
            if len(ghost) > limit:
                ghost.popitem(last=False)
    else:
        policy._window_weight = window_weight
        if policy._probation_weight + policy._protected_weight + window_weight <= policy._capacity:
            evicted = []
        else:  # no candidate: the oldest key of probation, else protected, else the window
            victim = next(iter(probation), None)
            if victim is None:
                victim = next(iter(policy._protected), None)
                if victim is None:
                    victim = next(iter(window))
            policy._drop(victim)
            evicted = [victim]
    policy._misses_in_sample += 1
    policy._requests_in_sample += 1
    if policy._requests_in_sample >= policy._sample_size:
        policy._climb()
    return evicted


def insert_weighted(policy: TinyLfuPolicy, key: Hashable, weight: int) -> list[Hashable]:
    assert key not in policy._slots and 1 <= weight <= policy._capacity
    if policy.reads:
        policy.drain_reads()
    slots = policy._slots[key] = policy.sketch.slots(key)
    policy.sketch.add(key, slots)
    if key in policy._window_ghost:
        del policy._window_ghost[key]
        policy._votes += 1
    elif key in policy._main_ghost:
        del policy._main_ghost[key]
        policy._votes -= 1
    policy._window[key] = weight
    policy._window_weight += weight
    candidates: deque[Hashable] = deque()
    while policy._window_weight > policy._window_max:
        moved, moved_weight = policy._window.popitem(last=False)
        policy._window_weight -= moved_weight
        policy._probation[moved] = moved_weight
        policy._probation_weight += moved_weight
        candidates.append(moved)
    evicted: list[Hashable] = []
    while (
        policy._probation_weight + policy._protected_weight + policy._window_weight
        > policy._capacity
    ):
        evicted.append(_evict_one(policy, candidates))
    policy._misses_in_sample += 1
    policy._requests_in_sample += 1
    if policy._requests_in_sample >= policy._sample_size:
        policy._climb()
    return evicted


def _evict_one(policy: TinyLfuPolicy, candidates: deque[Hashable]) -> Hashable:
    while candidates and candidates[0] not in policy._probation:
        candidates.popleft()
    candidate = candidates[0] if candidates else None
    victim: Hashable | None = next(iter(policy._probation), None)
    if victim is None or victim == candidate:
        victim = next(iter(policy._protected), None)
    if candidate is None:
        if victim is None:
            victim = next(iter(policy._window))
        policy._drop(victim)
        return victim
    if victim is None or not _admit(policy, candidate, victim):
        candidates.popleft()
        policy._drop(candidate)
        # Refused at the duel: a larger window would have kept it. With no victim at all
        # the main area is empty, and a larger main area would have had room for it.
        if victim is None:
            _remember(policy._main_ghost, candidate, policy._main_ghost_max)
        else:
            _remember(policy._window_ghost, candidate, policy._window_ghost_max)
        return candidate
    policy._drop(victim)
    _remember(policy._main_ghost, victim, policy._main_ghost_max)
    return victim


def _remember(ghost: OrderedDict[Hashable, None], key: Hashable, limit: int) -> None:
    ghost[key] = None
    if len(ghost) > limit:
        ghost.popitem(last=False)


def _admit(policy: TinyLfuPolicy, candidate: Hashable, victim: Hashable) -> bool:
    frequency, slots = policy.sketch.frequency, policy._slots
    candidate_frequency = frequency(candidate, slots[candidate])
    victim_frequency = frequency(victim, slots[victim])
    if candidate_frequency > victim_frequency:
        return True
    if candidate_frequency >= ADMIT_POPULAR_FREQUENCY:
        return policy._random.random() < ADMIT_POPULAR_CHANCE
    return False
