"""Adaptive W-TinyLFU (Einziger, Friedman and Manes), with a hill-climbed window.

Theory of operation. Residents live in three LRU areas:

* the **window** (initially 1% of capacity) admits every newcomer, so a burst of new keys gets
  a chance to prove itself;
* the **main** area is a segmented LRU: keys leaving the window enter *probation*; a hit there
  promotes them to *protected* (80% of main), whose overflow is demoted back to probation.

When the window overflows, its oldest keys become *candidates* for main. If main is full, a
candidate duels the oldest probation key (the *victim*): the ``FrequencySketch`` estimates
both, and the candidate wins only if it is strictly more frequent. A candidate that is
already popular (estimate >= 6) but loses is still admitted with probability 1/128, drawn from
the injected ``random.Random``, so an attacker cannot pin the main area with colliding keys.
The miss path (admission, the duel, the ghost lists below) lives in
``blocks.cache.tinylfu_miss``; this module keeps the areas, the hits and the climber's step.

The window size is tuned at run time by **hill climbing**, one step per sample of requests
(``climb_sample_factor`` x capacity, one capacity by default; a full step is 6.25% of
capacity), always inside ``window_bounds`` (fractions of capacity, by default from 1% to the
whole cache: never below the starting window, see below). A fixed 1% window collapses on recency-heavy traces (newcomers never win a duel); a
large window degenerates to LRU on loops; the climber walks between the two. Two climbers
estimate the slope:

* ``shadow`` (default) *measures* it. Two small ghost lists remember the last candidates
  refused at the duel and the last victims evicted from main. A miss on a refused candidate
  would have been a hit with a larger window; a miss on a main victim would have been a hit
  with a larger main area. Each sample, the window moves one step towards the side that
  collected more such misses, and stays put on a tie. Comparing two areas on the same sample
  cancels the workload's own noise, which a before/after comparison cannot, so small samples
  are safe and adaptation is fast (with ``guard=False``; see below). Two corrections keep it
  honest. A candidate dropped with no victim to duel (the main area is empty) goes to the
  *main* ghost: a larger main area would have had room for it. Without that, a window that reached the whole cache could
  never shrink again (it stayed at 100%, that is LRU, on Zipf streams). And the window's ghost
  is only 3/4 of a step long: it counts what a larger window gains but not what the smaller
  main area loses, which costs more, as main keeps the more frequent keys.

  The ghosts can be wrong: on a loop slightly longer than the cache (``loop.lirs`` at 1,000
  entries) they voted for a larger window sample after sample, and the window ran to the
  whole cache, 40% hits where a 1% window gets 94%. So by default (``guard=True``) the votes
  only propose, and ``blocks.cache.climber.GuardedClimber`` takes a move back when the hit
  ratio says it lost, with a decaying and restarting step and a veto with backoff. Samples
  are one capacity long so that one covers a loop as long as the cache: on half-capacity
  samples the hit ratio of ``loop.lirs`` swung between 4% and 98% with the loop's phase.
* ``trial`` is Caffeine's climber (``blocks.cache.climber.TrialClimber``): move, then compare
  the next sample's hit ratio with the previous one; keep going if it improved, turn around
  otherwise; steps decay by 2% per sample and restart when the hit ratio jumps by more than
  5 points.

Hits are cheap (Caffeine's read buffer). ``access`` only appends the key to ``reads``; the
buffer is applied in one batch when it holds ``READ_BUFFER_MAX`` keys and before anything
that could observe it (an insertion, a removal, ``window_max``). Applying it in order gives
exactly the state that applying each hit at once would give, and a batch allows shortcuts:
the sketch counts first, skipping keys already at the counters' cap (``saturated``), then the
LRU areas move, each key once, at its last hit, when no promotion can interleave. Each
resident key keeps its place in the sketch (``slots``), computed once at admission.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable

from blocks.cache.climber import GuardedClimber, TrialClimber
from blocks.cache.lru import check_capacity
from blocks.cache.sketch import FrequencySketch, Slots
from blocks.cache.tinylfu_miss import SMALL_BATCH, insert_weighted
from blocks.cache.tinylfu_miss import insert as insert_miss
from blocks.core.errors import InvalidArgument

__all__ = ["CLIMBERS", "READ_BUFFER_MAX", "WINDOW_LOW_DEFAULT", "TinyLfuPolicy"]

_PROTECTED_FRACTION = 0.8
_STEP_FRACTION = 0.0625
CLIMBERS = ("shadow", "trial")
WINDOW_LOW_DEFAULT = 0.01
"""The window's default lower bound, a fraction of capacity (at least one entry): the
starting 1% window. On the shared traces nothing gained from going below it, and on loops a
little longer than the cache (``loop.lirs`` at 253, 506 and 1,000 entries) the votes drove
the window to a single entry, 1.2 to 1.7 points under the 1% window at 253 and 506."""
_WINDOW_GHOST_DISCOUNT = 0.75
"""The window's ghost is this fraction of a step long (see the module docstring)."""
READ_BUFFER_MAX = 256
"""Hits buffered before they are applied in one batch."""


class TinyLfuPolicy:
    """W-TinyLFU over keys with integer weights; ``adaptive=False`` keeps the window fixed."""

    __slots__ = (
        "_capacity",
        "_guard",
        "_main_ghost",
        "_main_ghost_max",
        "_misses_in_sample",
        "_probation",
        "_probation_weight",
        "_protected",
        "_protected_max",
        "_protected_weight",
        "_random",
        "_requests_in_sample",
        "_sample_size",
        "_slots",
        "_step_fraction",
        "_trial",
        "_votes",
        "_window",
        "_window_ghost",
        "_window_ghost_max",
        "_window_max",
        "_window_max_bound",
        "_window_min_bound",
        "_window_weight",
        "adaptive",
        "climber",
        "guard",
        "reads",
        "sketch",
    )
    name = "wtinylfu"

    def __init__(
        self,
        capacity: int,
        *,
        window_fraction: float = 0.01,
        adaptive: bool = True,
        rng: random.Random | None = None,
        sample_factor: int = 10,
        climb_sample_factor: float = 1.0,
        step_fraction: float = _STEP_FRACTION,
        climber: str = "shadow",
        guard: bool = True,
        window_bounds: tuple[float, float] = (WINDOW_LOW_DEFAULT, 1.0),
    ) -> None:
        self._capacity = check_capacity(capacity)
        if not 0.0 < window_fraction <= 1.0:
            raise InvalidArgument(f"window_fraction must be in (0, 1], got {window_fraction}")
        if not 0.0 < step_fraction <= 1.0 or not climb_sample_factor > 0.0:
            raise InvalidArgument("step_fraction must be in (0, 1] and climb_sample_factor > 0")
        if climber not in CLIMBERS:
            raise InvalidArgument(f"climber must be one of {CLIMBERS}, got {climber!r}")
        low, high = window_bounds
        if not 0.0 <= low <= high <= 1.0:
            raise InvalidArgument(
                f"window_bounds must satisfy 0 <= low <= high <= 1, got {window_bounds}"
            )
        self._window_min_bound = max(1, round(low * capacity))
        self._window_max_bound = max(self._window_min_bound, round(high * capacity))
        self.adaptive = adaptive
        self._random = rng if rng is not None else random.Random(0)
        self.sketch = FrequencySketch(capacity, sample_factor=sample_factor)
        self.reads: list[Hashable] = []
        """Hits not yet applied, oldest first, at most ``READ_BUFFER_MAX``; see ``drain_reads``."""
        self._slots: dict[Hashable, Slots] = {}
        """Every resident key, with its place in the sketch (computed once per admission)."""
        self._window: OrderedDict[Hashable, int] = OrderedDict()
        self._probation: OrderedDict[Hashable, int] = OrderedDict()
        self._protected: OrderedDict[Hashable, int] = OrderedDict()
        self._window_weight = self._probation_weight = self._protected_weight = 0
        self._window_max = 1
        self._protected_max = 0
        self._set_window_max(round(capacity * window_fraction))
        self._sample_size = max(16, round(climb_sample_factor * capacity))
        self._step_fraction = step_fraction
        self._misses_in_sample = self._requests_in_sample = 0
        self._trial = TrialClimber(step_fraction * capacity)
        self.climber = climber
        self._window_ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._main_ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._main_ghost_max = max(1, round(step_fraction * capacity))
        self._window_ghost_max = max(1, round(_WINDOW_GHOST_DISCOUNT * step_fraction * capacity))
        self._votes = 0
        self.guard = guard
        self._guard = GuardedClimber(
            self._window_max, max(1, round(step_fraction * capacity)), self._sample_size
        )

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def weight(self) -> int:
        return self._window_weight + self._probation_weight + self._protected_weight

    @property
    def window_max(self) -> int:
        """Current target weight of the admission window."""
        self.drain_reads()
        return self._window_max

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def _set_window_max(self, window_max: int) -> None:
        bounded = min(max(self._window_min_bound, window_max), self._window_max_bound)
        self._window_max = bounded
        assert 1 <= self._window_max <= self._capacity
        self._protected_max = int(_PROTECTED_FRACTION * (self._capacity - self._window_max))

    # -- hits ---------------------------------------------------------------------------

    def access(self, key: Hashable) -> None:
        reads = self.reads
        reads.append(key)
        if len(reads) >= READ_BUFFER_MAX:
            self.drain_reads()

    def drain_reads(self) -> None:
        """Apply the buffered hits, oldest first, exactly as if each had been applied at once.

        The sketch and the LRU areas do not read each other while hits are applied (only an
        admission reads both, and it drains first), so the sketch counts the whole batch
        first and the areas move after, stopping only where the climber's sample ends.
        """
        reads = self.reads
        if not reads:
            return
        self.sketch.add_many(reads, self._slots)
        start, count = 0, len(reads)
        if count < SMALL_BATCH and count < self._sample_size - self._requests_in_sample:
            self._move_one_by_one(reads)  # frequent misses: skip the batch machinery
            self._requests_in_sample += count
            reads.clear()
            return
        while start < count:
            end = min(count, start + self._sample_size - self._requests_in_sample)
            self._move_on_hits(reads if start == 0 and end == count else reads[start:end])
            self._requests_in_sample += end - start
            if self._requests_in_sample >= self._sample_size:
                self._climb()
            start = end
        reads.clear()

    def _move_on_hits(self, keys: list[Hashable]) -> None:
        protected, window = self._protected, self._window
        last_hits = dict.fromkeys(reversed(keys))  # distinct keys, latest hit first
        if self._probation.keys().isdisjoint(last_hits):
            # No promotions: moves inside protected and inside the window commute, and an
            # LRU list ends up ordered by each key's last hit, so each key moves once.
            for key in reversed(last_hits):
                if key in window:
                    window.move_to_end(key)
                else:
                    protected.move_to_end(key)
            return
        self._move_one_by_one(keys)

    def _move_one_by_one(self, keys: list[Hashable]) -> None:
        protected, window = self._protected, self._window
        for key in keys:
            if key in protected:
                protected.move_to_end(key)
            elif key in window:
                window.move_to_end(key)
            else:
                self._promote(key)

    def _promote(self, key: Hashable) -> None:
        weight = self._probation.pop(key)
        self._probation_weight -= weight
        self._protected[key] = weight
        self._protected_weight += weight
        self._demote_protected_overflow()

    def _demote_protected_overflow(self) -> None:
        while self._protected_weight > self._protected_max and self._protected:
            key, weight = self._protected.popitem(last=False)
            self._protected_weight -= weight
            self._probation[key] = weight
            self._probation_weight += weight

    # -- misses -------------------------------------------------------------------------

    insert = insert_miss
    """``insert(key, weight)``, the miss path: ``blocks.cache.tinylfu_miss.insert``."""

    def _insert_weighted(self, key: Hashable, weight: int) -> list[Hashable]:
        """The general miss path for any weight (``insert`` with weight 1 must decide as it
        does)."""
        return insert_weighted(self, key, weight)

    def _drop(self, key: Hashable) -> None:
        del self._slots[key]
        if key in self._probation:
            self._probation_weight -= self._probation.pop(key)
        elif key in self._protected:
            self._protected_weight -= self._protected.pop(key)
        else:
            self._window_weight -= self._window.pop(key)

    def remove(self, key: Hashable) -> None:
        if self.reads:
            self.drain_reads()
        self._drop(key)

    def request(self, key: Hashable) -> bool:
        if key in self._slots:
            reads = self.reads
            reads.append(key)
            if len(reads) >= READ_BUFFER_MAX:
                self.drain_reads()
            return True
        insert_miss(self, key, 1)
        return False

    # -- adaptation ---------------------------------------------------------------------

    def _climb(self) -> None:
        hits = self._requests_in_sample - self._misses_in_sample
        hit_ratio = hits / self._requests_in_sample
        self._misses_in_sample = self._requests_in_sample = 0
        if not self.adaptive:
            return
        if self.climber == "shadow":
            # Misses the two ghost lists would have turned into hits say which area is short.
            votes, self._votes = self._votes, 0
            if self.guard:
                self._resize_window(self._guard.step(votes, hit_ratio, self._window_max))
                return
            step = max(1, round(self._step_fraction * self._capacity))
            if votes:
                self._resize_window(step if votes > 0 else -step)
            return
        # "trial": move, then judge the move by the next sample's hit ratio (Caffeine's climber).
        self._resize_window(self._trial.step(hit_ratio))

    def _resize_window(self, delta: int) -> None:
        if delta == 0:
            return
        self._set_window_max(self._window_max + delta)
        while self._window_weight > self._window_max:
            key, weight = self._window.popitem(last=False)
            self._window_weight -= weight
            self._probation[key] = weight
            self._probation_weight += weight
        self._demote_protected_overflow()
