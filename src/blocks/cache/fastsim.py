"""W-TinyLFU over a whole trace in one loop: the simulator's fast path.

Theory of operation. ``TinyLfuPolicy.request`` costs about ten Python calls on a miss (hash,
count, admit, two estimates, drop, remember, ...) and attribute lookups for every field. When
the simulator replays a trace, nothing else can observe the policy between two requests, so
``tinylfu_hit_count`` runs the same algorithm with every step inlined and the bookkeeping cut
down to list and byte indexing:

* **Dense ids.** Every key the run can meet (the trace's, the residents', the ghosts', the
  sketch's saturated ones) is numbered once, up front, and the trace is mapped to its ids at C
  speed. The policy's LRU areas and ghost lists hold ids while the loop runs, and each id's
  sketch slots sit in a list (computed once, all together, the index arithmetic in numpy:
  ``FrequencySketch.slots_many``).
* **One lookup per request.** ``where`` (a bytearray indexed by id) says where a key is:
  nowhere, the window, probation, protected, or one of the two ghost lists. A hit needs that
  one byte to choose its LRU move; a miss, to take its ghost vote. (A key is in at most one
  of those places: a key enters a ghost only when it is dropped, and leaves its ghost when it
  is admitted again.)
* **Samples as slices.** The climber's sample ends every ``sample_size`` requests whatever
  they were, so the loop runs over one sample's slice of the trace at a time and counts
  neither requests nor hits; only misses are counted (the climber needs them), and hits are
  the requests less the misses.
* **Unit-weight shortcuts.** When every resident weighs 1 (the simulator's case; checked once
  per run, and misses add weight 1), the common miss (one key leaves the window, one eviction
  makes room) lets the candidate into probation only if it wins its duel, and a promotion
  demotes at most one key, without the general loops. Other weights take the general path.
* Hits are applied at once (the tests show that the policy's read buffer changes nothing).
  The rare steps (sketch aging, the climber's step at the end of each sample) call the
  policy's and the sketch's own methods on the id-keyed structures and reload what they
  change.

It is a second implementation of the same decisions, so its contract is exactness: for any
trace, the same hits and the same final policy state as calling ``policy.request`` for each
key (``tests/cache/test_cache_fastsim.py`` checks it with Hypothesis, on long traces that
cross many samples and agings, and request by request on the real traces). Any change to
``TinyLfuPolicy``'s decisions must be made here too; that test fails until it is.

Memory: an id, a slots tuple and a byte per distinct key of the trace, and the trace as ids.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import chain
from typing import Any, cast

from blocks.cache.sketch import Slots
from blocks.cache.tinylfu import TinyLfuPolicy

__all__ = ["tinylfu_hit_count"]

_COUNTER_MAX = 15
_SATURATED_ESTIMATE = _COUNTER_MAX + 1
_ADMIT_POPULAR_FREQUENCY = 6
_ADMIT_POPULAR_CHANCE = 1.0 / 128.0

# Values of ``where``: where a key is.
_NOWHERE, _WINDOW, _PROBATION, _PROTECTED, _WINDOW_GHOST, _MAIN_GHOST = range(6)

_AREAS = ("_window", "_probation", "_protected", "_window_ghost", "_main_ghost")
"""The policy's fields keyed by key that the loop keys by id (``_climb`` works on them as
they are)."""


def _rekey(policy: TinyLfuPolicy, rename: Callable[[Any], Hashable]) -> None:
    """Replace every key in the policy's areas, ghosts and saturated set by ``rename(key)``,
    keeping each area's order."""
    for name in _AREAS:
        area = getattr(policy, name)
        setattr(policy, name, OrderedDict(zip(map(rename, area), area.values(), strict=True)))
    policy.sketch.saturated = set(map(rename, policy.sketch.saturated))


def tinylfu_hit_count(policy: TinyLfuPolicy, trace: Sequence[Hashable]) -> int:
    """Feed ``trace`` to ``policy`` (unit weights, every miss admitted); return the hits.

    Leaves ``policy`` exactly as ``for key in trace: policy.request(key)`` would.
    """
    policy.drain_reads()
    if not trace:
        return 0
    sketch = policy.sketch
    keys: list[Hashable] = list(
        dict.fromkeys(
            chain(
                policy._slots,
                policy._window_ghost,
                policy._main_ghost,
                sketch.saturated,
                trace,
            )
        )
    )
    ids: dict[Hashable, int] = {key: number for number, key in enumerate(keys)}
    slot_of = sketch.slots_many(keys)
    _rekey(policy, ids.__getitem__)  # ids while the loop runs, keys again afterwards
    try:
        return _run(policy, list(map(ids.__getitem__, trace)), slot_of, len(keys))
    finally:
        residents = chain(policy._window, policy._probation, policy._protected)
        policy._slots = {keys[key]: slot_of[key] for key in cast("Iterable[int]", residents)}
        _rekey(policy, keys.__getitem__)


def _run(policy: TinyLfuPolicy, trace: list[int], slot_of: list[Slots], count: int) -> int:
    sketch = policy.sketch
    window = cast("OrderedDict[int, int]", policy._window)
    probation = cast("OrderedDict[int, int]", policy._probation)
    protected = cast("OrderedDict[int, int]", policy._protected)
    window_ghost = cast("OrderedDict[int, None]", policy._window_ghost)
    main_ghost = cast("OrderedDict[int, None]", policy._main_ghost)
    saturated = cast("set[int]", sketch.saturated)
    where = bytearray(count)
    for area, place in (
        (window_ghost, _WINDOW_GHOST),
        (main_ghost, _MAIN_GHOST),
        (window, _WINDOW),
        (probation, _PROBATION),
        (protected, _PROTECTED),
    ):
        for key in area:
            where[key] = place
    window_ghost_max, main_ghost_max = policy._window_ghost_max, policy._main_ghost_max
    capacity, sample_size = policy.capacity, policy._sample_size
    random_draw = policy._random.random
    saturated_max = sketch.saturated_max
    aging_period = sketch.sample_size
    counters, door, additions = sketch._counters, sketch._door, sketch.additions
    window_weight, probation_weight = policy._window_weight, policy._probation_weight
    protected_weight = policy._protected_weight
    window_max, protected_max = policy._window_max, policy._protected_max
    requests, misses, votes = policy._requests_in_sample, policy._misses_in_sample, policy._votes
    unit = all(weight == 1 for area in (window, probation, protected) for weight in area.values())
    """Every resident weighs 1 (misses add weight 1, so it stays true): the common miss
    below can count keys for weights."""
    missed_before = -misses  # misses counted in earlier samples, less those before this call
    window_move, protected_move = window.move_to_end, protected.move_to_end
    start, total = 0, len(trace)
    while start < total:
        end = min(total, start + sample_size - requests)
        for key in trace[start:end]:
            place = where[key]
            # Count the sighting in the sketch (FrequencySketch.add).
            if key not in saturated:
                first, first_bit, second, second_bit, a, b, c, d = slot_of[key]
                if door[first] & first_bit and door[second] & second_bit:
                    ca, cb, cc, cd = counters[a], counters[b], counters[c], counters[d]
                    least = ca if ca < cb else cb
                    if cc < least:
                        least = cc
                    if cd < least:
                        least = cd
                    if least < _COUNTER_MAX:
                        grown = least + 1
                        if ca == least:
                            counters[a] = grown
                        if cb == least:
                            counters[b] = grown
                        if cc == least:
                            counters[c] = grown
                        if cd == least:
                            counters[d] = grown
                    elif len(saturated) < saturated_max:
                        saturated.add(key)
                else:
                    door[first] |= first_bit
                    door[second] |= second_bit
            additions += 1
            if additions >= aging_period:
                sketch.additions = additions
                sketch.age()
                counters, door, additions = sketch._counters, sketch._door, sketch.additions
            if place == _PROTECTED:
                protected_move(key)
                continue
            if place == _WINDOW:
                window_move(key)
                continue
            if place == _PROBATION:  # promotion (TinyLfuPolicy._promote)
                if unit and protected_weight <= protected_max:
                    # Unit weights, protected within bounds: at most one key demoted (maybe
                    # this one, when protected holds nothing else and has no room).
                    del probation[key]
                    protected[key] = 1
                    where[key] = _PROTECTED
                    if protected_weight == protected_max:
                        demoted = protected.popitem(last=False)[0]
                        probation[demoted] = 1
                        where[demoted] = _PROBATION
                    else:
                        protected_weight += 1
                        probation_weight -= 1
                    continue
                weight = probation.pop(key)
                probation_weight -= weight
                protected[key] = weight
                protected_weight += weight
                where[key] = _PROTECTED
                while protected_weight > protected_max and protected:
                    demoted, weight = protected.popitem(last=False)
                    protected_weight -= weight
                    probation[demoted] = weight
                    probation_weight += weight
                    where[demoted] = _PROBATION
                continue
            # A miss: admission (TinyLfuPolicy.insert with weight 1).
            misses += 1
            if place == _WINDOW_GHOST:
                del window_ghost[key]
                votes += 1
            elif place == _MAIN_GHOST:
                del main_ghost[key]
                votes -= 1
            window[key] = 1
            where[key] = _WINDOW
            window_weight += 1
            if (
                window_weight <= window_max
                and probation_weight + protected_weight + window_weight <= capacity
            ):
                continue
            if (
                unit
                and window_weight == window_max + 1
                and (probation_weight + protected_weight + window_weight == capacity + 1)
            ):
                # The common miss with unit weights: one key leaves the window and one
                # eviction makes room. The same decisions as below, but the candidate enters
                # probation only if it wins (a loser would be added and removed at once).
                candidate, _ = window.popitem(last=False)
                window_weight -= 1
                if probation:
                    victim, victim_place = next(iter(probation)), _PROBATION
                elif protected:
                    victim, victim_place = next(iter(protected)), _PROTECTED
                else:  # an empty main area: a larger one would have had room
                    where[candidate] = _MAIN_GHOST
                    main_ghost[candidate] = None
                    if len(main_ghost) > main_ghost_max:
                        where[main_ghost.popitem(last=False)[0]] = _NOWHERE
                    continue
                # TinyLfuPolicy._admit: FrequencySketch.frequency of both.
                if candidate in saturated:
                    ours = _SATURATED_ESTIMATE
                else:
                    first, first_bit, second, second_bit, a, b, c, d = slot_of[candidate]
                    ca, cb, cc, cd = counters[a], counters[b], counters[c], counters[d]
                    ours = ca if ca < cb else cb
                    if cc < ours:
                        ours = cc
                    if cd < ours:
                        ours = cd
                    if door[first] & first_bit and door[second] & second_bit:
                        ours += 1
                if victim in saturated:
                    theirs = _SATURATED_ESTIMATE
                else:
                    first, first_bit, second, second_bit, a, b, c, d = slot_of[victim]
                    ca, cb, cc, cd = counters[a], counters[b], counters[c], counters[d]
                    theirs = ca if ca < cb else cb
                    if cc < theirs:
                        theirs = cc
                    if cd < theirs:
                        theirs = cd
                    if door[first] & first_bit and door[second] & second_bit:
                        theirs += 1
                if ours > theirs or (
                    ours >= _ADMIT_POPULAR_FREQUENCY and random_draw() < _ADMIT_POPULAR_CHANCE
                ):
                    if victim_place == _PROBATION:
                        del probation[victim]
                    else:
                        del protected[victim]
                        protected_weight -= 1
                        probation_weight += 1
                    probation[candidate] = 1
                    where[candidate] = _PROBATION
                    where[victim] = _MAIN_GHOST
                    main_ghost[victim] = None
                    if len(main_ghost) > main_ghost_max:
                        where[main_ghost.popitem(last=False)[0]] = _NOWHERE
                else:
                    where[candidate] = _WINDOW_GHOST
                    window_ghost[candidate] = None
                    if len(window_ghost) > window_ghost_max:
                        where[window_ghost.popitem(last=False)[0]] = _NOWHERE
                continue
            candidates: list[int] = []
            while window_weight > window_max:
                moved, weight = window.popitem(last=False)
                window_weight -= weight
                probation[moved] = weight
                probation_weight += weight
                where[moved] = _PROBATION
                candidates.append(moved)
            next_candidate = 0
            while probation_weight + protected_weight + window_weight > capacity:
                # One eviction (TinyLfuPolicy._evict_one).
                while (
                    next_candidate < len(candidates)
                    and where[candidates[next_candidate]] != _PROBATION
                ):
                    next_candidate += 1
                candidate = candidates[next_candidate] if next_candidate < len(candidates) else -1
                victim = next(iter(probation), -1)
                if victim < 0 or victim == candidate:
                    victim = next(iter(protected), -1)
                loser: int
                ghost: OrderedDict[int, None] | None
                ghost_max = 0
                if candidate < 0:
                    loser = victim if victim >= 0 else next(iter(window))
                    ghost = None
                else:
                    admitted = False
                    if victim >= 0:
                        # TinyLfuPolicy._admit: FrequencySketch.frequency of both.
                        if candidate in saturated:
                            ours = _SATURATED_ESTIMATE
                        else:
                            first, first_bit, second, second_bit, a, b, c, d = slot_of[candidate]
                            ours = min(counters[a], counters[b], counters[c], counters[d])
                            if door[first] & first_bit and door[second] & second_bit:
                                ours += 1
                        if victim in saturated:
                            theirs = _SATURATED_ESTIMATE
                        else:
                            first, first_bit, second, second_bit, a, b, c, d = slot_of[victim]
                            theirs = min(counters[a], counters[b], counters[c], counters[d])
                            if door[first] & first_bit and door[second] & second_bit:
                                theirs += 1
                        if ours > theirs:
                            admitted = True
                        elif ours >= _ADMIT_POPULAR_FREQUENCY:
                            admitted = random_draw() < _ADMIT_POPULAR_CHANCE
                    if admitted:
                        loser, ghost, ghost_max = victim, main_ghost, main_ghost_max
                    else:
                        next_candidate += 1
                        loser = candidate
                        if victim < 0:
                            ghost, ghost_max = main_ghost, main_ghost_max
                        else:
                            ghost, ghost_max = window_ghost, window_ghost_max
                # TinyLfuPolicy._drop, then _remember.
                place = where[loser]
                if place == _PROBATION:
                    probation_weight -= probation.pop(loser)
                elif place == _PROTECTED:
                    protected_weight -= protected.pop(loser)
                else:
                    window_weight -= window.pop(loser)
                if ghost is None:
                    where[loser] = _NOWHERE
                else:
                    ghost[loser] = None
                    where[loser] = _WINDOW_GHOST if ghost is window_ghost else _MAIN_GHOST
                    if len(ghost) > ghost_max:
                        where[ghost.popitem(last=False)[0]] = _NOWHERE
        requests += end - start
        start = end
        if requests >= sample_size:
            # The climber's step: hand the state back, let the policy move, reload.
            policy._window_weight, policy._probation_weight = window_weight, probation_weight
            policy._protected_weight = protected_weight
            policy._requests_in_sample, policy._misses_in_sample = requests, misses
            policy._votes = votes
            missed_before += misses
            policy._climb()
            window_weight, probation_weight = policy._window_weight, policy._probation_weight
            protected_weight = policy._protected_weight
            if policy._window_max != window_max or policy._protected_max != protected_max:
                for key in probation:  # the resize moved keys into probation
                    where[key] = _PROBATION
            window_max, protected_max = policy._window_max, policy._protected_max
            requests, misses = policy._requests_in_sample, policy._misses_in_sample
            votes = policy._votes
    policy._window_weight, policy._probation_weight = window_weight, probation_weight
    policy._protected_weight = protected_weight
    policy._requests_in_sample, policy._misses_in_sample = requests, misses
    policy._votes = votes
    sketch.additions = additions
    return total - (missed_before + misses)
