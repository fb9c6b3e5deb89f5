"""Leader election for a partition's replicas: epochs, pre-votes, votes and fencing.

Theory of operation (Raft's election with pre-vote, over Kafka-style leader epochs).
``Elector`` holds what a replica knows of who leads: its ``epoch``, the vote it gave in it
(``voted_for``; the pair is the hard state, persisted before any message that rests on it
leaves, flagged by ``_dirty``), its ``role`` and the ``leader`` it follows. It decides alone;
what the elected leader then does with the log is the subclass's business
(``blocks.pubsub.replica.PartitionReplica``), reached through two hooks: ``_log_tail`` (the
epoch of the last record and the log's end, to compare logs) and ``_become_leader``.

* **Timeout.** A follower that has not heard from a leader for a randomized election timeout
  (``[t, 2t)``, from the injected ``random.Random``) becomes a pre-candidate and asks the others
  for a *pre-vote*: would you vote for me in epoch e+1? Only with a majority of yeses does it
  bump its epoch, vote for itself and ask for real votes.
* **Granting.** A vote goes to a candidate whose log is at least as up to date as the voter's,
  compared by (last epoch, log end), at most one per epoch. A pre-vote changes nothing here
  and is refused by a replica that still hears from a leader (or is one), so a replica that
  was cut off cannot disrupt a healthy leader when it returns.
* **Winning.** A candidate with a majority becomes leader and announces itself to the others
  with ``BeginEpoch``. Any committed record is on a majority and a majority must vote, so the
  winner holds every committed record.
* **Fencing.** A newer epoch seen anywhere makes the receiver a follower of it (with the leader
  it names, if any: that leader already won, so no other vote is given in that epoch); an
  older one is refused by the caller with the newer epoch.
* **The timer.** Each time the deadline moves, the next ``Ready`` asks for it
  (``election_timer``: ``(ELECTION_TIMER, deadline_ms)``, a later one replacing the earlier),
  while the replica does not lead: a driver that arms it instead of ticking on an interval
  calls ``tick`` exactly when a follower's or candidate's time runs out.

No I/O, no clock: every method takes ``now_ms`` from the caller.
"""

from __future__ import annotations

import enum
import random
from typing import Protocol

from blocks.pubsub.replica_messages import BeginEpoch, Message, VoteReply, VoteRequest

__all__ = ["ELECTION_TIMER", "Elector", "Role", "Voters"]

ELECTION_TIMER = "election"  # the name of the election deadline in ``Ready.timers``


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class Voters(Protocol):
    """What an election needs of its configuration (``ReplicaConfig`` has it)."""

    @property
    def node(self) -> str: ...
    @property
    def replicas(self) -> tuple[str, ...]: ...
    @property
    def election_timeout_ms(self) -> int: ...
    @property
    def majority(self) -> int: ...
    @property
    def others(self) -> tuple[str, ...]: ...


class Elector:
    """One replica's side of its partition's elections (see the module docs)."""

    def __init__(
        self,
        voters: Voters,
        rng: random.Random,
        now_ms: int,
        *,
        epoch: int,
        voted_for: str | None,
    ) -> None:
        self._voters = voters
        self._rng = rng
        self.epoch = epoch
        self.voted_for = voted_for
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self._dirty = False  # (epoch, voted_for) changed since the last HardState
        self._votes: set[str] = set()  # the (pre-)votes this (pre-)candidate has
        self._last_contact_ms = now_ms  # when a leader was last heard from
        self._deadline_ms = 0
        self._deadline_moved = False  # the deadline changed since the last election_timer
        self._reset_deadline(now_ms)

    # -- the subclass's part ------------------------------------------------------------------

    def _log_tail(self) -> tuple[int, int]:
        """``(epoch of the last record, log end)`` of this replica's log."""
        raise NotImplementedError

    def _become_leader(self, now_ms: int, *, marker: bool) -> None:
        """Lead this epoch (``role`` LEADER); ``marker``: won by an election, so the log owes
        an epoch marker."""
        raise NotImplementedError

    # -- timers -------------------------------------------------------------------------------

    def _reset_deadline(self, now_ms: int) -> None:
        timeout = self._voters.election_timeout_ms
        self._deadline_ms = now_ms + timeout + self._rng.randrange(timeout)
        self._deadline_moved = True

    def election_timer(self) -> list[tuple[str, int]]:
        """The timers for the step's ``Ready``: ``[(ELECTION_TIMER, deadline_ms)]`` once after
        the deadline moved while this replica does not lead, else ``[]`` (a leader's own
        checks are its subclass's). Taking it clears the flag."""
        moved, self._deadline_moved = self._deadline_moved, False
        if not moved or self.role is Role.LEADER:
            return []
        return [(ELECTION_TIMER, self._deadline_ms)]

    def _heard_leader(self, now_ms: int) -> None:
        self._last_contact_ms = now_ms
        self._reset_deadline(now_ms)

    def _election_tick(self, now_ms: int) -> list[tuple[str, Message]]:
        """A follower's or candidate's tick: past the deadline, start a pre-vote."""
        if now_ms < self._deadline_ms:
            return []
        self._reset_deadline(now_ms)
        self.role, self._votes = Role.PRE_CANDIDATE, {self._voters.node}
        if len(self._votes) >= self._voters.majority:
            return self._start_election(now_ms)
        last_epoch, log_end = self._log_tail()
        request = VoteRequest(self.epoch + 1, self._voters.node, last_epoch, log_end, True)
        return [(other, request) for other in self._voters.others]

    # -- role changes -------------------------------------------------------------------------

    def _adopt_epoch(self, epoch: int, leader: str | None, now_ms: int) -> None:
        assert epoch > self.epoch
        # A known leader has already won this epoch: never vote for anyone else in it.
        self.epoch, self.voted_for, self._dirty = epoch, leader, True
        self._become_follower(now_ms, leader)

    def _become_follower(self, now_ms: int, leader: str | None) -> None:
        self.role, self.leader, self._votes = Role.FOLLOWER, leader, set()
        self._heard_leader(now_ms)

    def _start_election(self, now_ms: int) -> list[tuple[str, Message]]:
        node = self._voters.node
        self.epoch, self.voted_for, self._dirty = self.epoch + 1, node, True
        self.role, self._votes = Role.CANDIDATE, {node}
        self._reset_deadline(now_ms)
        if len(self._votes) >= self._voters.majority:
            self._become_leader(now_ms, marker=True)
            return []
        last_epoch, log_end = self._log_tail()
        request = VoteRequest(self.epoch, node, last_epoch, log_end, False)
        return [(other, request) for other in self._voters.others]

    # -- votes --------------------------------------------------------------------------------

    def _log_ok(self, request: VoteRequest) -> bool:
        return (request.last_epoch, request.log_end) >= self._log_tail()

    def _vote_reply(self, request: VoteRequest, now_ms: int) -> VoteReply:
        """Decide a (pre-)vote; the caller has checked that it comes from a replica."""
        if request.pre:
            hears_leader = self.role is Role.LEADER or (
                self.role is Role.FOLLOWER
                and self.leader is not None
                and now_ms - self._last_contact_ms < self._voters.election_timeout_ms
            )
            granted = request.epoch > self.epoch and not hears_leader and self._log_ok(request)
            return VoteReply(self.epoch, request.epoch, granted, True, self.leader)
        if request.epoch > self.epoch:
            self._adopt_epoch(request.epoch, None, now_ms)
        granted = (
            request.epoch == self.epoch
            and self.voted_for in (None, request.candidate)
            and self.role is not Role.LEADER
            and self._log_ok(request)
        )
        if granted:
            self.voted_for, self._dirty = request.candidate, True
            self._reset_deadline(now_ms)
        return VoteReply(self.epoch, request.epoch, granted, False, self.leader)

    def _count_vote(self, source: str, reply: VoteReply, now_ms: int) -> list[tuple[str, Message]]:
        """Count a (pre-)vote; a majority moves on to the election, or wins it."""
        voters = self._voters
        if reply.epoch > self.epoch and not (reply.pre and reply.granted):
            self._adopt_epoch(reply.epoch, reply.leader, now_ms)
            return []
        if not reply.granted or source not in voters.replicas:
            return []
        if reply.pre and self.role is Role.PRE_CANDIDATE and reply.vote_epoch == self.epoch + 1:
            self._votes.add(source)
            if len(self._votes) >= voters.majority:
                return self._start_election(now_ms)
        elif not reply.pre and self.role is Role.CANDIDATE and reply.vote_epoch == self.epoch:
            self._votes.add(source)
            if len(self._votes) >= voters.majority:
                self._become_leader(now_ms, marker=True)
                return [(o, BeginEpoch(self.epoch, voters.node)) for o in voters.others]
        return []

    def _begin_epoch(self, source: str, message: BeginEpoch, now_ms: int) -> None:
        """A leader announced itself: follow it unless its epoch is older."""
        if message.epoch < self.epoch or message.leader != source:
            return
        if message.epoch > self.epoch:
            self._adopt_epoch(message.epoch, source, now_ms)
        elif self.role is not Role.LEADER:
            self._become_follower(now_ms, source)
