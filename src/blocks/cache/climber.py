"""The guard on W-TinyLFU's shadow climber: ghost votes propose, the hit ratio disposes.

Theory of operation. ``TinyLfuPolicy``'s shadow climber counts, each sample, the misses its two
ghost lists say a larger window or a larger main area would have saved (the *votes*). Votes
can be wrong: on a loop slightly longer than the cache (``loop.lirs`` at 1,000 entries) they
said "larger window" sample after sample while every larger window was worse, and the window
ran to the whole cache. ``GuardedClimber`` turns votes into moves only while the hit ratio
agrees:

* **Home.** The last window size whose sample was the best seen since. The window may wander
  from it as the votes say; a sample whose hit ratio falls clearly below home's (``GUARD_Z``
  standard errors of the difference of two samples, at least ``GUARD_TOLERANCE_MIN``) sends
  it back home. Comparing with home rather than with the previous sample catches a creep of
  steps each too small to see.
* **Veto with backoff.** After the k-th return home in a row, the direction that lost is
  refused for the next 2**(k-1) - 1 samples (0, 1, 3, 7 ..., at most ``VETO_SAMPLES_MAX``);
  a better sample somewhere resets the backoff. (Refusing it for 1, 2, 4 ... samples was
  measured too: 0.05 points worse on average over the shared traces, loop.lirs unchanged.)
* **Step size.** Halves on a return home and when the votes turn round (the best size is
  near); grows by half while they keep their direction, up to ``STEP_GROWTH_MAX`` full steps;
  restarts at one full step when home, re-measured, moved by ``RESTART_SHIFT`` (a new
  workload). That lifts the veto too, but only when home moved so far ``RESTART_CONFIRM``
  re-measurements in a row: a single drop is more often the aftermath of a losing move (on
  ``loop.lirs`` at 1,000 a trial at a larger window upsets the main area, home's next samples
  fall by 20 points and recover) than a new workload, and lifting the veto on it started the
  next losing trial at once (90.5% there, 93.9% with the confirmation).

The class is pure: ``step`` takes the sample's votes and hit ratio and the current window
size, and returns how far to move the window (the policy clamps it to its bounds).

``TrialClimber`` is the other climber ``TinyLfuPolicy`` offers (``climber="trial"``), Caffeine's:
move, then compare the next sample's hit ratio with the previous one; keep going if it
improved, turn around otherwise; steps decay by 2% per sample (``TRIAL_STEP_DECAY``) and
restart at a full step when the hit ratio jumps by ``TRIAL_RESTART_SHIFT`` or more. It is pure
too: ``step`` takes the sample's hit ratio and returns the move.
"""

from __future__ import annotations

import math

__all__ = [
    "GUARD_TOLERANCE_MIN",
    "GUARD_Z",
    "RESTART_CONFIRM",
    "RESTART_SHIFT",
    "STEP_GROWTH_MAX",
    "TRIAL_RESTART_SHIFT",
    "TRIAL_STEP_DECAY",
    "VETO_SAMPLES_MAX",
    "GuardedClimber",
    "TrialClimber",
]

GUARD_Z = 2.0
"""A move is undone when the hit ratio falls this many standard errors below home's."""
GUARD_TOLERANCE_MIN = 0.005
"""...and by at least this much (half a point), so that a near-perfect ratio is not brittle."""
RESTART_SHIFT = 0.05
"""Home re-measured this far (5 points) from its last ratio: the workload changed, restart."""
RESTART_CONFIRM = 3
"""...and the veto is lifted when home has moved that far this many re-measurements in a row."""
STEP_GROWTH_MAX = 4.0
"""Moves that keep going the same way grow by half each time, up to this many full steps."""
VETO_SAMPLES_MAX = 64
"""Longest time (in samples) a direction stays refused after its moves were undone."""
TRIAL_STEP_DECAY = 0.98
"""``TrialClimber``'s step shrinks by this factor each sample..."""
TRIAL_RESTART_SHIFT = 0.05
"""...and restarts at a full step when the hit ratio moved this much (5 points) in one sample."""


class GuardedClimber:
    """Window moves from ghost votes, checked against the hit ratio at home."""

    __slots__ = (
        "_direction",
        "_home_ratio",
        "_home_window",
        "_sample_size",
        "_shifts",
        "_step",
        "_step_max",
        "_veto_direction",
        "_veto_left",
        "_veto_samples",
    )

    def __init__(self, window: int, step_max: int, sample_size: int) -> None:
        assert step_max >= 1 and sample_size >= 1
        self._step_max = step_max
        self._sample_size = sample_size
        self._step = float(step_max)
        self._home_window = window
        self._home_ratio = -1.0
        """Hit ratio last measured with the window at ``_home_window``; -1 before the first."""
        self._direction = 0
        self._veto_direction = self._veto_left = 0
        self._veto_samples = 1
        self._shifts = 0
        """Re-measurements of home in a row that moved it by ``RESTART_SHIFT`` or more."""

    def step(self, votes: int, hit_ratio: float, window: int) -> int:
        """How far to move the window after a sample (positive: larger window)."""
        if window == self._home_window or self._home_ratio < 0.0:
            shift = abs(hit_ratio - self._home_ratio)
            self._home_window, self._home_ratio = window, hit_ratio
            if shift >= RESTART_SHIFT:
                self._step = float(self._step_max)
                self._shifts += 1
                if self._shifts >= RESTART_CONFIRM:
                    self._veto_left, self._veto_samples = 0, 1
            else:
                self._shifts = 0
        else:
            home = self._home_ratio
            spread = math.sqrt(2.0 * home * (1.0 - home) / self._sample_size)
            if hit_ratio < home - max(GUARD_TOLERANCE_MIN, GUARD_Z * spread):
                self._veto_direction = 1 if window > self._home_window else -1
                self._veto_left = self._veto_samples
                self._veto_samples = min(VETO_SAMPLES_MAX, 2 * self._veto_samples)
                self._step = max(1.0, self._step / 2.0)
                self._direction = 0
                return self._home_window - window
            if hit_ratio > home:
                self._home_window, self._home_ratio = window, hit_ratio
                self._veto_samples = 1
        if self._veto_left:
            self._veto_left -= 1
        if not votes:
            return 0
        direction = 1 if votes > 0 else -1
        if direction == self._veto_direction and self._veto_left:
            return 0
        if self._direction and direction != self._direction:
            self._step = max(1.0, self._step / 2.0)  # turned round: the best size is near
        elif self._direction:
            self._step = min(STEP_GROWTH_MAX * self._step_max, self._step * 1.5)  # speed up
        self._direction = direction
        return direction * round(self._step)


class TrialClimber:
    """Caffeine's hill climber: a move is judged by the next sample's hit ratio."""

    __slots__ = ("_previous_hit_ratio", "_step", "_step_max")

    def __init__(self, step_max: float) -> None:
        assert step_max > 0.0
        self._step_max = step_max
        self._step = -step_max
        """The next move, signed (positive: larger window); the first one shrinks it."""
        self._previous_hit_ratio = 0.0

    def step(self, hit_ratio: float) -> int:
        """How far to move the window after a sample (positive: larger window)."""
        change = hit_ratio - self._previous_hit_ratio
        self._previous_hit_ratio = hit_ratio
        amount = self._step if change >= 0 else -self._step
        if abs(change) >= TRIAL_RESTART_SHIFT:
            self._step = self._step_max * (1 if amount >= 0 else -1)
        else:
            self._step = TRIAL_STEP_DECAY * amount
        return round(amount)
