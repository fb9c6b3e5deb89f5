"""``PartitionReplica``: one broker's replica of one partition, as a pure state machine.

Theory of operation
-------------------
Each partition is stored on ``replicas`` brokers. In every *leader epoch* at most one of them
is the leader; the others are followers that *fetch* from it (pull, as in Kafka): a fetch
names the follower's log end and the epoch of its last record, and is answered with the
records after that end. A follower's fetch offset is what the leader knows it holds.

* **In-sync replicas.** The leader keeps the ISR: itself plus every follower that has been
  fully caught up within ``lag_max_ms``. A follower that lags or dies longer than that leaves
  the ISR (``tick``); one whose fetch reaches the high watermark joins again.
* **High watermark.** The largest offset held *durably* by every ISR member *and* by a
  majority of the replicas (a follower's fetch offset is durable there; the leader counts
  its own records from ``note_durable``, since it serves them to followers while its own
  fsync runs, so the two fsyncs overlap instead of adding up), and (Raft's rule) only once
  it covers a record of the leader's own epoch: the new leader's first record is a control
  *epoch marker*. Records below the high watermark are committed: readable by consumers, and
  an ``acks=all`` produce is acknowledged when the high watermark passes its last record.
  Requiring a majority as well means the ISR shrinking to the leader alone stalls
  acknowledgements rather than risking them. With ``commit_on_majority`` the ISR is left out:
  a majority of durable copies, whichever replicas hold them, is enough (Raft's commit rule;
  the vote rule above makes every later leader hold such a record), so neither the slowest
  in-sync follower nor the leader's own fsync is waited for when two others are durable.
* **Election** (``blocks.pubsub.election``, whose docs tell it whole). A follower that has not
  heard from a leader for a randomized election timeout asks for pre-votes, then for votes in
  a new epoch; a vote goes only to a candidate whose log is at least as up to date, at most
  one per epoch, and is persisted before the reply. The winner holds every committed record
  and announces itself with ``BeginEpoch``.
* **Fencing.** Every message carries an epoch. A message from an older epoch is refused and
  answered with the newer epoch; a newer epoch makes the receiver a follower. A deposed leader
  learns of the new epoch from the first such answer; until then its late writes can never
  reach a majority of fetches in its epoch, so they are never acknowledged. A leader that has
  heard from no majority for an election timeout steps down by itself.
* **Truncation.** The leader checks each fetch against its epoch history: if the follower's
  last epoch ended earlier on the leader (or is unknown to it), it answers ``diverging`` with
  that epoch's end, and the follower cuts its log to the smaller of both ends for that epoch
  and fetches again (Kafka's KIP-101/KIP-279). Since one epoch has one leader, a record's
  ``(offset, epoch)`` names its content, and repeated cuts end at the common prefix.
* **Behind the log start.** A fetch below the leader's log start (its retention or its
  snapshots cut the records the follower needs) is answered ``behind`` with that start; the
  follower drops its log and starts it empty there (its driver may first install what stands
  for the missing records, e.g. a state-machine snapshot). It holds nothing the leader counts
  until it fetches again, and rejoins the ISR only once caught up, as any follower. A fetch
  from such an empty log (last epoch 0) inside the leader's log is served from its offset.

The replica holds no records: only its log's shape (start, end, and the epoch history: where
each epoch's records begin). The driver stores records and reports appends and truncations
with ``note_appended``/``note_truncated``. Every step (``tick`` and each ``handle_*``) returns
a ``ReplicaReady`` (``blocks.core.ready.Ready``): ``records`` first, a ``HardState`` to persist
atomically whenever ``(epoch, voted_for)`` changed and an ``EpochMarker`` a new leader owes its
log, then ``messages`` as ``(destination, message)`` pairs, and as ``replies`` the step's answer
to its caller (the ``FetchDecision`` of ``handle_fetch``, the ``(FollowerAction, offset)`` of
``handle_fetch_reply``). The driver carries each one out before it calls the core again, so
hard states reach the disk in the order they were decided. ``timers`` asks for ``tick``: the
election deadline (``ELECTION_TIMER``) whenever it moved on a replica that does not lead, a
leader's next check (``LEADER_TIMER``, ``blocks.pubsub.leader_watch``) when it becomes leader,
after each of its ticks and when an ISR join brings it forward; ``resume`` asks for both again.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument
from blocks.core.ready import NOTHING, Ready
from blocks.pubsub.election import ELECTION_TIMER, Elector, Role
from blocks.pubsub.leader_watch import LeaderWatch
from blocks.pubsub.replica_messages import (
    BeginEpoch,
    EpochMarker,
    FetchDecision,
    FetchReplyInfo,
    FetchRequest,
    HardState,
    Message,
    ReplicaReady,
    ReplicaRecord,
    ReplyT,
    VoteReply,
    VoteRequest,
)

__all__ = [
    "ELECTION_TIMER",
    "LEADER_TIMER",
    "EpochMarker",
    "FollowerAction",
    "HardState",
    "PartitionReplica",
    "ReplicaConfig",
    "ReplicaReady",
    "ReplicaRecord",
    "Role",
]

LEADER_TIMER = "leader"  # the name of a leader's next check in ``Ready.timers``


class FollowerAction(enum.Enum):
    APPEND = "append"  # append the reply's records, then note them and the high watermark
    TRUNCATE = "truncate"  # cut the log at ``truncate_to`` and fetch again
    RESTART = "restart"  # below the leader's log start: start the log empty at the offset
    IGNORE = "ignore"  # stale or fenced: fetch again (perhaps from another leader)


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    node: str
    replicas: tuple[str, ...]
    election_timeout_ms: int = 1_000  # randomized in [t, 2t)
    lag_max_ms: int = 2_000  # a follower not caught up for longer leaves the ISR
    announce_interval_ms: int = 250  # BeginEpoch to a follower not fetching for this long
    # False: committed once durable on every ISR member and a majority (acks=all). True:
    # once durable on a majority (Raft's rule), whichever replicas those are.
    commit_on_majority: bool = False

    def __post_init__(self) -> None:
        if self.node not in self.replicas or len(set(self.replicas)) != len(self.replicas):
            raise InvalidArgument("replicas must be distinct and include node")
        for name in ("election_timeout_ms", "lag_max_ms", "announce_interval_ms"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive")

    @property
    def majority(self) -> int:
        return len(self.replicas) // 2 + 1

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(r for r in self.replicas if r != self.node)


class PartitionReplica(Elector):
    """See the module docs. Every method takes ``now_ms`` from the caller's clock; the
    election's state and decisions (``epoch``, ``voted_for``, ``role``, ``leader``) are
    ``Elector``'s."""

    def __init__(
        self,
        config: ReplicaConfig,
        rng: random.Random,
        now_ms: int,
        *,
        epoch: int = 0,
        voted_for: str | None = None,
        epochs: list[tuple[int, int]] | None = None,
        log_start: int = 0,
        log_end: int = 0,
    ) -> None:
        self.config = config
        self.epochs: list[tuple[int, int]] = list(epochs or [])  # (epoch, first offset)
        self.log_start = log_start
        self.log_end = log_end
        # Records below this are durable here; a leader counts only these as its own hold
        # (it sends records to followers before its own fsync ends; see note_appended).
        self.durable_end = log_end
        self.hw = log_start  # committed below this offset (as far as this replica knows)
        self._marker_due = False
        super().__init__(config, rng, now_ms, epoch=epoch, voted_for=voted_for)
        # leader state
        self._epoch_start = -1  # offset of this epoch's marker; -1 for the creation epoch
        self.isr: set[str] = set()
        self.match: dict[str, int] = {}
        self._watch = LeaderWatch(now_ms)  # the followers as heard (blocks.pubsub.leader_watch)
        self._leader_due_ms = now_ms  # the check last asked for (LEADER_TIMER)
        self._leader_due_moved = False  # ask for _leader_due_ms in the next Ready

    @classmethod
    def created(cls, config: ReplicaConfig, rng: random.Random, now_ms: int) -> PartitionReplica:
        """A new partition: epoch 1, led by ``replicas[0]`` without an election."""
        replica = cls(config, rng, now_ms, epoch=1, voted_for=config.replicas[0])
        replica._dirty = True
        if config.node == config.replicas[0]:
            replica._become_leader(now_ms, marker=False)
        else:
            replica.leader = config.replicas[0]
        return replica

    # -- effects the driver collects ----------------------------------------------------------

    def _ready(
        self, messages: list[tuple[str, Message]] | None = None, replies: Sequence[ReplyT] = ()
    ) -> ReplicaReady[ReplyT]:
        """The step's effects: a ``HardState`` once after ``(epoch, voted_for)`` changed (the
        creation's included), an ``EpochMarker`` once after winning an election while still
        leading, then ``messages`` and ``replies``, and the timers that moved: the election deadline
        (``Elector.election_timer``), a leader's next check (``LEADER_TIMER``)."""
        records: list[ReplicaRecord] = []
        if self._dirty:
            self._dirty = False
            records.append(HardState(self.epoch, self.voted_for))
        if self._marker_due:
            self._marker_due = False
            if self.role is Role.LEADER:
                records.append(EpochMarker(self.epoch))
        timers = self.election_timer()
        if self._leader_due_moved:
            self._leader_due_moved = False
            if self.role is Role.LEADER:
                timers.append((LEADER_TIMER, self._leader_due_ms))
        if not (records or messages or replies or timers):
            return NOTHING
        return Ready(messages or (), records, replies, timers)

    # -- the log's shape ------------------------------------------------------------------------

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1][0] if self.epochs else 0

    def end_offset_for(self, epoch: int) -> tuple[int, int]:
        """``(e, end)``: the largest epoch ``e <= epoch`` in the history and the offset where
        its records end here; ``(0, log_start)`` when there is none."""
        index = bisect.bisect_right(self.epochs, (epoch, float("inf"))) - 1
        if index < 0:
            return 0, self.log_start
        found = self.epochs[index][0]
        end = self.epochs[index + 1][1] if index + 1 < len(self.epochs) else self.log_end
        return found, end

    def note_appended(
        self, first_offset: int, epochs: list[int], now_ms: int, *, durable: bool = True
    ) -> None:
        """Records with these epochs were stored from ``first_offset`` on; with ``durable``
        False they are written but not yet durable here (``note_durable`` follows), which
        lets a leader serve them to its followers while its own fsync runs."""
        assert first_offset == self.log_end, "appends continue the log"
        for index, epoch in enumerate(epochs):
            if epoch != self.last_epoch:
                assert epoch > self.last_epoch, "epochs only grow along a log"
                self.epochs.append((epoch, first_offset + index))
        self.log_end += len(epochs)
        if durable:
            self.durable_end = self.log_end
        if self.role is Role.LEADER:
            self._update_hw()

    def note_durable(self, end: int) -> None:
        """Every record below ``end`` is durable here (durability grows as a prefix)."""
        self.durable_end = max(self.durable_end, min(end, self.log_end))
        if self.role is Role.LEADER:
            self._update_hw()

    def note_truncated(self, offset: int) -> None:
        """The log was cut: records at ``offset`` and later are gone."""
        assert offset >= self.hw or self.role is not Role.LEADER, "committed records stay"
        self.log_end = min(self.log_end, max(offset, self.log_start))
        self.durable_end = min(self.durable_end, self.log_end)
        while self.epochs and self.epochs[-1][1] >= self.log_end:
            self.epochs.pop()
        self.hw = min(self.hw, self.log_end)

    def note_restarted(self, offset: int) -> None:
        """The log was dropped and starts empty at ``offset`` (a follower found behind)."""
        assert self.role is not Role.LEADER, "only a follower restarts its log"
        self.log_start = self.log_end = self.durable_end = offset
        self.epochs = []
        self.hw = offset

    def note_follower_hw(self, leader_hw: int) -> None:
        self.hw = max(self.hw, min(leader_hw, self.log_end))

    def _log_tail(self) -> tuple[int, int]:
        return self.last_epoch, self.log_end

    # -- timers -----------------------------------------------------------------------------

    def resume(self, now_ms: int) -> ReplicaReady[None]:
        """A step without input that asks again for every timer this replica needs (its
        election deadline, or its next leader check): for a driver that starts, or that has
        dropped the timers of earlier steps."""
        self._deadline_moved = True
        if self.role is Role.LEADER:
            self._ask_leader_check(self._next_leader_check(now_ms))
        return self._ready()

    def tick(self, now_ms: int) -> ReplicaReady[None]:
        """Time passed: elections, ISR shrinking, ``BeginEpoch`` announcements."""
        return self._ready(self._tick(now_ms))

    def _tick(self, now_ms: int) -> list[tuple[str, Message]]:
        if self.role is Role.LEADER:
            return self._leader_tick(now_ms)
        return self._election_tick(now_ms)

    def _leader_tick(self, now_ms: int) -> list[tuple[str, Message]]:
        out = self._leader_checks(now_ms)
        if self.role is Role.LEADER:
            self._ask_leader_check(self._next_leader_check(now_ms))
        return out

    def _leader_checks(self, now_ms: int) -> list[tuple[str, Message]]:
        for follower in self._watch.lagging(self.config, self.isr, now_ms):
            self.isr.discard(follower)
        self._update_hw()
        if self._watch.lost_majority(self.config, now_ms):
            self._become_follower(now_ms, None)
            return []
        announcement = BeginEpoch(self.epoch, self.config.node)
        return [(f, announcement) for f in self._watch.announce(self.config, now_ms)]

    def _next_leader_check(self, now_ms: int) -> int:
        return self._watch.next_check_ms(self.config, self.isr, now_ms)

    def _ask_leader_check(self, due_ms: int) -> None:
        self._leader_due_ms, self._leader_due_moved = due_ms, True

    # -- role changes -----------------------------------------------------------------------

    def _become_follower(self, now_ms: int, leader: str | None) -> None:
        super()._become_follower(now_ms, leader)
        self.isr, self.match = set(), {}

    def _become_leader(self, now_ms: int, *, marker: bool) -> None:
        self.role, self.leader = Role.LEADER, self.config.node
        self.isr, self.match = {self.config.node}, {}
        self._watch = LeaderWatch(now_ms)
        self._epoch_start = self.log_end if marker else -1
        self._marker_due = marker
        if marker:  # won an election: the Elector announces it to every follower now
            self._watch.announced_ms = dict.fromkeys(self.config.others, now_ms)
        self._update_hw()
        self._ask_leader_check(self._next_leader_check(now_ms))

    # -- votes ------------------------------------------------------------------------------

    def handle_vote_request(
        self, source: str, request: VoteRequest, now_ms: int
    ) -> ReplicaReady[None]:
        """Answer a (pre-)vote with a ``VoteReply`` to ``source``, sent once the vote given
        (a ``HardState`` in the same ``Ready``) is durable."""
        if source not in self.config.replicas or source != request.candidate:
            raise InvalidArgument(f"{source!r} is not a replica of this partition")
        return self._ready([(source, self._vote_reply(request, now_ms))])

    def handle_vote_reply(self, source: str, reply: VoteReply, now_ms: int) -> ReplicaReady[None]:
        return self._ready(self._count_vote(source, reply, now_ms))

    def handle_begin_epoch(
        self, source: str, message: BeginEpoch, now_ms: int
    ) -> ReplicaReady[None]:
        self._begin_epoch(source, message, now_ms)
        return self._ready()

    # -- fetching: leader side --------------------------------------------------------------

    def handle_fetch(
        self, source: str, request: FetchRequest, now_ms: int
    ) -> ReplicaReady[FetchDecision]:
        """Decide the answer to a follower's fetch (the one reply); the driver adds the
        records from ``decision.offset`` to the log's end."""
        return self._ready(replies=(self._decide_fetch(source, request, now_ms),))

    def _decide_fetch(self, source: str, request: FetchRequest, now_ms: int) -> FetchDecision:
        if source not in self.config.others:
            raise InvalidArgument(f"{source!r} is not a follower of this partition")
        if request.epoch > self.epoch:
            self._adopt_epoch(request.epoch, None, now_ms)
        if self.role is not Role.LEADER or request.epoch < self.epoch:
            return FetchDecision("fenced", self.epoch, self.leader, self.hw)
        self._watch.last_fetch_ms[source] = now_ms
        if request.offset < self.log_start:
            self.match.pop(source, None)  # it holds nothing this log still has
            return FetchDecision("behind", self.epoch, self.leader, self.hw, offset=self.log_start)
        empty = request.last_epoch == 0 and request.offset <= self.log_end  # restarted there
        if request.offset > self.log_start and not empty:
            epoch, end = self.end_offset_for(request.last_epoch)
            if epoch != request.last_epoch or end < request.offset:
                return FetchDecision("diverging", self.epoch, self.leader, self.hw, epoch, end)
        offset = max(request.offset, self.log_start)
        self.match[source] = offset
        if offset >= self.log_end:
            self._watch.caught_up_ms[source] = now_ms
        if source not in self.isr and offset >= self.hw and offset > self._epoch_start:
            self.isr.add(source)
            self._watch.caught_up_ms[source] = now_ms
            lag_due_ms = now_ms + self.config.lag_max_ms + 1
            if lag_due_ms < self._leader_due_ms:  # a new member's lag check comes first
                self._ask_leader_check(lag_due_ms)
        self._update_hw()
        return FetchDecision("records", self.epoch, self.leader, self.hw, offset=offset)

    def _update_hw(self) -> bool:
        own = self.durable_end  # only what is durable here counts (never past log_end)
        holds = [own] + [self.match.get(f, 0) for f in self.config.others]
        candidate = sorted(holds, reverse=True)[self.config.majority - 1]
        if not self.config.commit_on_majority:
            followers = self.isr - {self.config.node}
            candidate = min([candidate, own] + [self.match.get(f, 0) for f in followers])
        if candidate > self._epoch_start and candidate > self.hw:
            self.hw = candidate
            return True
        return False

    # -- fetching: follower side ------------------------------------------------------------

    def fetch_request(self, *, waiting: bool = False) -> FetchRequest | None:
        """The next fetch to send to ``self.leader`` (None unless a follower with a leader);
        ``waiting``: callers here wait to learn that the high watermark passed their records."""
        if self.role is not Role.FOLLOWER or self.leader is None:
            return None
        last_epoch = self.last_epoch if self.log_end > self.log_start else 0
        waiting = waiting and self.hw < self.log_end  # else there is nothing new to learn
        return FetchRequest(self.epoch, self.log_end, last_epoch, waiting)

    def handle_fetch_reply(
        self, source: str, reply: FetchReplyInfo, now_ms: int
    ) -> ReplicaReady[tuple[FollowerAction, int]]:
        """What to do with a fetch answer (the one reply): ``(TRUNCATE, offset)`` names where
        to cut, ``(RESTART, offset)`` where the log starts again."""
        return self._ready(replies=(self._follow(source, reply, now_ms),))

    def _follow(
        self, source: str, reply: FetchReplyInfo, now_ms: int
    ) -> tuple[FollowerAction, int]:
        if reply.epoch > self.epoch:
            self._adopt_epoch(reply.epoch, reply.leader, now_ms)
            return FollowerAction.IGNORE, 0
        if reply.epoch < self.epoch or self.role is not Role.FOLLOWER or source != self.leader:
            return FollowerAction.IGNORE, 0
        if reply.kind == "fenced":
            if reply.leader is not None and reply.leader != self.leader:
                self._become_follower(now_ms, reply.leader)
            return FollowerAction.IGNORE, 0
        self._heard_leader(now_ms)
        if reply.kind == "behind":
            if reply.offset <= self.log_end:
                return FollowerAction.IGNORE, 0  # stale: this log already reaches it
            return FollowerAction.RESTART, reply.offset
        if reply.kind == "diverging":
            _, own_end = self.end_offset_for(reply.diverging_epoch)
            return FollowerAction.TRUNCATE, min(reply.diverging_end, own_end, self.log_end)
        return FollowerAction.APPEND, 0

    def describe(self) -> dict[str, object]:
        return {
            "role": self.role.value,
            "epoch": self.epoch,
            "leader": self.leader,
            "log_end": self.log_end,
            "hw": self.hw,
            "isr": sorted(self.isr),
        }
