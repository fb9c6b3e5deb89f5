"""W-TinyLFU over a whole trace in one loop: the simulator's fast path.

Theory of operation. ``TinyLfuPolicy.request`` costs about ten Python calls on a miss (hash,
count, admit, two estimates, drop, remember, ...) and attribute lookups for every field. When
the simulator replays a trace, nothing else can observe the policy between two requests, so
``tinylfu_hit_count`` runs the same algorithm with the policy's fields held in local
variables and every step inlined: hits are applied at once (the tests show that the policy's
read buffer changes nothing), a key's sketch slots are computed once per run rather than once
per admission (for all of them at once, the index arithmetic in numpy: ``slots_many``), and
the rare steps (sketch aging, the climber's step at the end of each sample)
write the locals back, call the policy's own methods, and reload.

It is a second implementation of the same decisions, so its contract is exactness: for any
trace, the same hits and the same final policy state as calling ``policy.request`` for each
key (``tests/cache/test_cache_fastsim.py`` checks it with Hypothesis and on long traces that
cross many samples and agings). Any change to ``TinyLfuPolicy``'s decisions must be made here
too; that test fails until it is.

Memory: one slots tuple per distinct key of the trace (the trace itself is already in memory).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

from blocks.cache.sketch import Slots
from blocks.cache.tinylfu import TinyLfuPolicy

__all__ = ["tinylfu_hit_count"]

_COUNTER_MAX = 15
_SATURATED_ESTIMATE = _COUNTER_MAX + 1
_ADMIT_POPULAR_FREQUENCY = 6
_ADMIT_POPULAR_CHANCE = 1.0 / 128.0


def tinylfu_hit_count(policy: TinyLfuPolicy, trace: Sequence[Hashable]) -> int:
    """Feed ``trace`` to ``policy`` (unit weights, every miss admitted); return the hits.

    Leaves ``policy`` exactly as ``for key in trace: policy.request(key)`` would.
    """
    policy.drain_reads()
    sketch = policy.sketch
    resident = policy._slots
    known: dict[Hashable, Slots] = dict(resident)
    distinct = [key for key in dict.fromkeys(trace) if key not in resident]
    known.update(zip(distinct, sketch.slots_many(distinct), strict=True))
    window, probation, protected = policy._window, policy._probation, policy._protected
    window_ghost, main_ghost = policy._window_ghost, policy._main_ghost
    window_ghost_max, main_ghost_max = policy._window_ghost_max, policy._main_ghost_max
    capacity, sample_size = policy.capacity, policy._sample_size
    random_draw = policy._random.random
    saturated, saturated_max = sketch.saturated, sketch.saturated_max
    aging_period = sketch.sample_size
    counters, door, additions = sketch._counters, sketch._door, sketch.additions
    window_weight, probation_weight = policy._window_weight, policy._probation_weight
    protected_weight = policy._protected_weight
    window_max, protected_max = policy._window_max, policy._protected_max
    requests, misses, votes = policy._requests_in_sample, policy._misses_in_sample, policy._votes
    hits = 0
    for key in trace:
        slots = resident.get(key)
        hit = slots is not None
        if slots is None:
            slots = resident[key] = known[key]
        # Count the sighting in the sketch (FrequencySketch.add).
        if key not in saturated:
            first, first_bit, second, second_bit, a, b, c, d = slots
            if door[first] & first_bit and door[second] & second_bit:
                ca, cb, cc, cd = counters[a], counters[b], counters[c], counters[d]
                least = min(ca, cb, cc, cd)
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
        if hit:
            hits += 1
            if key in protected:
                protected.move_to_end(key)
            elif key in window:
                window.move_to_end(key)
            else:  # promotion from probation (TinyLfuPolicy._promote)
                weight = probation.pop(key)
                probation_weight -= weight
                protected[key] = weight
                protected_weight += weight
                while protected_weight > protected_max and protected:
                    demoted, weight = protected.popitem(last=False)
                    protected_weight -= weight
                    probation[demoted] = weight
                    probation_weight += weight
        else:
            # Admission (TinyLfuPolicy.insert with weight 1).
            if key in window_ghost:
                del window_ghost[key]
                votes += 1
            elif key in main_ghost:
                del main_ghost[key]
                votes -= 1
            window[key] = 1
            window_weight += 1
            candidates: list[Hashable] = []
            while window_weight > window_max:
                moved, weight = window.popitem(last=False)
                window_weight -= weight
                probation[moved] = weight
                probation_weight += weight
                candidates.append(moved)
            next_candidate = 0
            while probation_weight + protected_weight + window_weight > capacity:
                # One eviction (TinyLfuPolicy._evict_one).
                while (
                    next_candidate < len(candidates) and candidates[next_candidate] not in probation
                ):
                    next_candidate += 1
                candidate = candidates[next_candidate] if next_candidate < len(candidates) else None
                victim = next(iter(probation), None)
                if victim is None or victim == candidate:
                    victim = next(iter(protected), None)
                loser: Hashable
                ghost: OrderedDict[Hashable, None] | None
                ghost_max = 0
                if candidate is None:
                    loser = victim if victim is not None else next(iter(window))
                    ghost = None
                else:
                    admitted = False
                    if victim is not None:
                        # TinyLfuPolicy._admit: FrequencySketch.frequency of both.
                        if candidate in saturated:
                            ours = _SATURATED_ESTIMATE
                        else:
                            first, first_bit, second, second_bit, a, b, c, d = resident[candidate]
                            ours = min(counters[a], counters[b], counters[c], counters[d])
                            if door[first] & first_bit and door[second] & second_bit:
                                ours += 1
                        if victim in saturated:
                            theirs = _SATURATED_ESTIMATE
                        else:
                            first, first_bit, second, second_bit, a, b, c, d = resident[victim]
                            theirs = min(counters[a], counters[b], counters[c], counters[d])
                            if door[first] & first_bit and door[second] & second_bit:
                                theirs += 1
                        if ours > theirs:
                            admitted = True
                        elif ours >= _ADMIT_POPULAR_FREQUENCY:
                            admitted = random_draw() < _ADMIT_POPULAR_CHANCE
                    if admitted:
                        assert victim is not None
                        loser, ghost, ghost_max = victim, main_ghost, main_ghost_max
                    else:
                        next_candidate += 1
                        loser = candidate
                        if victim is None:
                            ghost, ghost_max = main_ghost, main_ghost_max
                        else:
                            ghost, ghost_max = window_ghost, window_ghost_max
                # TinyLfuPolicy._drop, then _remember.
                del resident[loser]
                if loser in probation:
                    probation_weight -= probation.pop(loser)
                elif loser in protected:
                    protected_weight -= protected.pop(loser)
                else:
                    window_weight -= window.pop(loser)
                if ghost is not None:
                    ghost[loser] = None
                    if len(ghost) > ghost_max:
                        ghost.popitem(last=False)
            misses += 1
        requests += 1
        if requests >= sample_size:
            # The climber's step: hand the state back, let the policy move, reload.
            policy._window_weight, policy._probation_weight = window_weight, probation_weight
            policy._protected_weight = protected_weight
            policy._requests_in_sample, policy._misses_in_sample = requests, misses
            policy._votes = votes
            policy._climb()
            window_weight, probation_weight = policy._window_weight, policy._probation_weight
            protected_weight = policy._protected_weight
            window_max, protected_max = policy._window_max, policy._protected_max
            requests, misses = policy._requests_in_sample, policy._misses_in_sample
            votes = policy._votes
    policy._window_weight, policy._probation_weight = window_weight, probation_weight
    policy._protected_weight = protected_weight
    policy._requests_in_sample, policy._misses_in_sample = requests, misses
    policy._votes = votes
    sketch.additions = additions
    return hits
