"""The replica and coordinator logic of one cluster node, as a core without I/O.

Theory of operation (after Amazon's Dynamo). Inputs are client commands
(``coordinate_put``/``coordinate_get``), peer messages (``handle``) and the passage of time
(``tick``); each returns a ``KVReady`` (``blocks.core.ready.Ready``): messages to send as
``(node, message)`` pairs, and ``Reply``/``Fail`` for client requests; the keys a step changed
are in ``dirty`` until the driver saves them (``saved``), before any of that step's effects
leave. A driver carries them out; the simulator in the tests does the same with faults.

* **Placement.** ``placement(key)`` lists every node in ring order for the key; the first
  ``replicas`` are its *home* nodes.
* **Sloppy quorum.** A request goes to the home nodes the caller reports healthy; each home
  node that is down is replaced by the next healthy node past the home list, which stores
  the write with a *hint* naming the owner (``quorum.plan_targets``, ``quorum.HintSet``).
  ``W`` acks (the coordinator's own write counts) answer a put, ``R`` replies answer a get;
  fewer targets than ``W``/``R`` fail at once with ``Unavailable``, no quorum before the
  deadline fails with ``Timeout`` (the write may still have landed on some replicas).
* **Versions.** The coordinator of a put must be one of its targets: it makes the new dotted
  version from its own copy (``versions.update``) and replicates the result; replicas merge.
  Its dot counters come from a ``counter_lease`` the driver reserves durably ahead of use
  (``counter_mark_needed``), so a copy that lost writes to a power cut never reissues a dot.
* **Hinted handoff.** ``tick`` sends hinted objects to owners that are healthy again; on
  their ack the hint goes, and so does the copy if this node is not a home node for the key.
  A copy that arrives without a hint for a key this node is not home for (sent by a node
  whose ring is older) is owed to the home nodes the same way.
* **Read repair.** When a get has heard every target (or its deadline passes), replicas whose
  copy differs from the merged result are sent the merged object.
* **Anti-entropy.** ``start_anti_entropy(peer)`` sends the leaf hashes of a Merkle tree over
  the keys both nodes should hold; the peer answers with its objects in differing leaves,
  the initiator merges them and sends its own back. Only differing ranges move.

Bounds: ``pending_max`` requests in flight, ``hints_max`` hints, ``handoff_batch_max`` handoffs
per tick; beyond them requests fail with ``Overloaded`` and hints are refused (the write still
counts only if its other replicas ack it).

A request in flight, from its targets to its answer and read repair, is a
``quorum_round.QuorumRound``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from blocks.core.clock import Clock
from blocks.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    Overloaded,
    Unavailable,
)
from blocks.core.ready import NOTHING, Ready
from blocks.kv.cluster.anti_entropy import (
    Digests,
    answer_sync,
    apply_sync,
    object_digest,
    start_anti_entropy,
)
from blocks.kv.cluster.dot_lease import CounterLease
from blocks.kv.cluster.hlc import HybridLogicalClock
from blocks.kv.cluster.messages import (
    Fail,
    GetReplica,
    GetReply,
    Handoff,
    HandoffAck,
    KVReady,
    Message,
    PutAck,
    PutReplica,
    Reply,
    SyncLeaves,
    SyncObjects,
)
from blocks.kv.cluster.quorum import HintSet, QuorumConfig, plan_targets
from blocks.kv.cluster.quorum_round import QuorumRound
from blocks.kv.cluster.versions import (
    COUNTER_MAX,
    VersionedObject,
    VersionVector,
    merge,
    next_counter,
    update,
)

__all__ = [
    "Fail",
    "GetReplica",
    "GetReply",
    "Handoff",
    "HandoffAck",
    "HintSet",
    "KVNodeCore",
    "KVReady",
    "PutAck",
    "PutReplica",
    "QuorumConfig",
    "Reply",
    "SyncLeaves",
    "SyncObjects",
    "object_digest",
    "plan_targets",
]


Outgoing = list[tuple[str, Message]]  # a step's messages, built up by the helpers below
Replies = list[Reply | Fail]


def _answer(reply: Reply | Fail) -> KVReady:
    return Ready(replies=[reply])


class KVNodeCore:
    """One node's replica storage, coordinator state and hints; drive it from one loop."""

    def __init__(
        self,
        node_id: str,
        config: QuorumConfig,
        placement: Callable[[bytes], list[str]],
        clock: Clock,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.placement = placement
        self.clock = clock
        self.hlc = HybridLogicalClock(clock)
        self.objects: dict[bytes, VersionedObject] = {}
        self.hints = HintSet()
        # Keys whose object or hints changed since the driver last persisted them, and what
        # each held before its first change since then (what the store holds).
        self.dirty: set[bytes] = set()
        self._before_change: dict[bytes, tuple[VersionedObject | None, frozenset[str]]] = {}
        self.hints_refused = 0
        self.anti_entropy_repairs = 0  # keys whose copy here changed through anti-entropy
        self.digests = Digests()
        # Bumped by whoever makes ``placement`` answer differently (the driver, on a ring
        # change), so the home sets anti-entropy keeps per key are recomputed.
        self.placement_epoch = 0
        self._pending: dict[int, QuorumRound] = {}
        # Dot counters this life may issue; None: not bounded (a core without a store that
        # outlives it, as in unit tests). The driver reserves ahead of use (``dot_lease``).
        self.counter_lease: CounterLease | None = None

    def counter_mark_needed(self, key: bytes, context: VersionVector) -> int | None:
        """The counter mark to make durable before a put of ``key`` from ``context`` may be
        coordinated here; None when the lease already covers it (or there is no lease)."""
        lease = self.counter_lease
        if lease is None or self.node_id not in self.placement(key):
            return None  # no lease, or the put is forwarded: it issues no dot here
        counter = next_counter(self.objects.get(key), context, self.node_id, lease.floor)
        return lease.mark_needed(min(counter, COUNTER_MAX))

    # -- client commands -------------------------------------------------------------------

    def coordinate_put(
        self,
        request_id: int,
        key: bytes,
        value: bytes | None,
        context: VersionVector,
        healthy: set[str],
        write_quorum: int | None = None,
    ) -> KVReady:
        """Write ``value`` (``None`` deletes) seen from ``context``; W acks answer."""
        needed = write_quorum or self.config.write_quorum
        targets = plan_targets(self.placement(key), healthy | {self.node_id}, self.config.replicas)
        nodes = [node for node, _ in targets]
        if self.node_id not in nodes:
            owner = nodes[0] if nodes else None
            return _answer(
                Fail(request_id, FailedPrecondition("not a replica of this key", owner=owner))
            )
        refusal = self._refuse(request_id, len(targets), needed)
        if refusal is not None:
            return _answer(refusal)
        lease = self.counter_lease
        floor = 0 if lease is None else lease.floor
        stored = self.objects.get(key)
        counter = next_counter(stored, context, self.node_id, floor)
        if counter > COUNTER_MAX:
            error = InvalidArgument("the context's counter is at its maximum")
            return _answer(Fail(request_id, error))
        assert lease is None or counter <= lease.reserved, "counters are reserved before use"
        new = update(
            stored,
            context,
            self.node_id,
            value,
            self.hlc.now(),
            lww=self.config.lww,
            counter_floor=floor,
        )
        own_hint = dict(targets)[self.node_id]
        self._store(key, new, own_hint)
        if len(nodes) == 1:  # N=1: this copy is the quorum; no pending entry to keep
            return _answer(Reply(request_id, new))
        deadline = self.clock.monotonic() + self.config.timeout_s
        pending = QuorumRound(True, key, needed, deadline, nodes, result=new)
        pending.heard[self.node_id] = new
        self._pending[request_id] = pending
        messages: Outgoing = [
            (node, PutReplica(request_id, key, new, hint))
            for node, hint in targets
            if node != self.node_id
        ]
        replies: Replies = []
        self._maybe_answer(request_id, pending, replies)
        if pending.complete:  # no other target (N=1): nothing more to hear
            self._finish(request_id, pending, messages)
        return Ready(messages, replies=replies)

    def coordinate_get(
        self, request_id: int, key: bytes, healthy: set[str], read_quorum: int | None = None
    ) -> KVReady:
        """Read ``key`` from its replicas; R replies answer, the rest feed read repair."""
        needed = read_quorum or self.config.read_quorum
        targets = plan_targets(self.placement(key), healthy | {self.node_id}, self.config.replicas)
        refusal = self._refuse(request_id, len(targets), needed)
        if refusal is not None:
            return _answer(refusal)
        nodes = [node for node, _ in targets]
        if needed == 1 and len(nodes) == 1 and nodes[0] == self.node_id:
            obj = self.objects.get(key)
            if obj is None or len(obj.siblings) <= 1 or not self.config.lww:
                # This node's copy is the only one: the round would answer it merged with
                # nothing (an equal, normalised object) and find nothing to repair. The
                # stored object itself keeps its wire form for the reply.
                return _answer(Reply(request_id, obj))
        pending = QuorumRound(
            False, key, needed, self.clock.monotonic() + self.config.timeout_s, nodes
        )
        self._pending[request_id] = pending
        messages: Outgoing = [(n, GetReplica(request_id, key)) for n in nodes if n != self.node_id]
        replies: Replies = []
        if self.node_id in nodes:
            self._heard(request_id, self.node_id, self.objects.get(key), messages, replies)
        return Ready(messages, replies=replies)

    def _refuse(self, request_id: int, targets: int, needed: int) -> Fail | None:
        if request_id in self._pending or request_id <= 0:
            return Fail(request_id, InvalidArgument("request ids must be unique and > 0"))
        if needed > self.config.replicas:
            return Fail(request_id, InvalidArgument("quorum larger than the replica count"))
        if len(self._pending) >= self.config.pending_max:
            return Fail(request_id, Overloaded("too many requests in flight", retry_after_ms=50))
        if targets < needed:
            return Fail(request_id, Unavailable(f"{targets} reachable replicas, need {needed}"))
        return None

    # -- peer messages ---------------------------------------------------------------------

    def handle(self, sender: str, message: Message) -> KVReady:
        """Apply one message from ``sender``; unknown request ids are late replies, ignored."""
        if isinstance(message, PutReplica):
            self._merge_in(message.key, message.obj, message.hint_owner)
            if message.hint_owner is None:
                self._maybe_pass_on(message.key)
            return Ready([(sender, PutAck(message.request_id))]) if message.request_id else NOTHING
        if isinstance(message, GetReplica):
            return Ready([(sender, GetReply(message.request_id, self.objects.get(message.key)))])
        if isinstance(message, PutAck):
            return self._hear(message.request_id, sender, None)
        if isinstance(message, GetReply):
            return self._hear(message.request_id, sender, message.obj)
        if isinstance(message, Handoff):
            self._merge_in(message.key, message.obj, None)
            self._maybe_pass_on(message.key)
            return Ready([(sender, HandoffAck(message.key))])
        if isinstance(message, HandoffAck):
            self._handoff_done(sender, message.key)
            return NOTHING
        if isinstance(message, SyncLeaves):
            return answer_sync(self, sender, message)
        return apply_sync(self, sender, message)

    def _hear(self, request_id: int, sender: str, obj: VersionedObject | None) -> KVReady:
        messages: Outgoing = []
        replies: Replies = []
        self._heard(request_id, sender, obj, messages, replies)
        return Ready(messages, replies=replies) if messages or replies else NOTHING

    def _heard(
        self,
        request_id: int,
        sender: str,
        obj: VersionedObject | None,
        messages: Outgoing,
        replies: Replies,
    ) -> None:
        """Count ``sender``'s answer; the answer and read repairs it makes due go out."""
        pending = self._pending.get(request_id)
        if pending is None or not pending.hear(sender, obj):
            return
        self._maybe_answer(request_id, pending, replies)
        if pending.complete:
            self._finish(request_id, pending, messages)

    def _maybe_answer(self, request_id: int, pending: QuorumRound, replies: Replies) -> None:
        reply = pending.maybe_answer(request_id, self.config.lww)
        if reply is not None:
            replies.append(reply)

    def _finish(self, request_id: int, pending: QuorumRound, messages: Outgoing) -> None:
        """Forget the request; for a get, repair the replicas that answered out of date."""
        del self._pending[request_id]
        merged = pending.repair(self.config.lww)
        if merged is None:
            return
        for node in pending.out_of_date(merged):
            if node == self.node_id:
                local = merge(self.objects.get(pending.key), merged, lww=self.config.lww)
                self._store(pending.key, local, None)
            else:
                messages.append((node, PutReplica(0, pending.key, merged)))

    # -- time ------------------------------------------------------------------------------

    def tick(self, healthy: set[str]) -> KVReady:
        """Expire requests past their deadline and hand hints to owners that are back."""
        now = self.clock.monotonic()
        messages: Outgoing = []
        replies: Replies = []
        for request_id, pending in list(self._pending.items()):
            if now >= pending.deadline:
                failure = pending.expire(request_id)
                if failure is not None:
                    replies.append(failure)
                self._finish(request_id, pending, messages)
        sent: list[bytes] = []
        for owner, key in self.hints:
            if len(sent) >= self.config.handoff_batch_max:
                break
            if owner in healthy and key in self.objects:
                messages.append((owner, Handoff(key, self.objects[key])))
                sent.append(key)
        for key in sent:  # round robin: an unanswered hand-off does not block the others
            self.hints.to_back(key)
        return Ready(messages, replies=replies) if messages or replies else NOTHING

    # -- storage, hints and anti-entropy ---------------------------------------------------

    def _touch(self, key: bytes) -> None:
        """Mark ``key`` dirty before changing it; its first change keeps what it was."""
        if key not in self.dirty:
            self._before_change[key] = (self.objects.get(key), frozenset(self.hints.owners(key)))
            self.dirty.add(key)

    def _store(self, key: bytes, obj: VersionedObject, hint_owner: str | None) -> None:
        self._touch(key)
        self.objects[key] = obj
        if hint_owner is not None and hint_owner != self.node_id:
            self._add_hint(hint_owner, key)

    def _add_hint(self, owner: str, key: bytes) -> None:
        if len(self.hints) < self.config.hints_max:
            self._touch(key)
            self.hints.add((owner, key))
        else:
            self.hints_refused += 1

    def hint_owners(self, key: bytes) -> list[str]:
        """The nodes this node still owes ``key`` (for persisting hints with the object)."""
        return sorted(self.hints.owners(key))

    def restore(self, key: bytes, obj: VersionedObject, hint_owners: Iterable[str]) -> None:
        """Load a persisted object and its hints (at start-up, before any other call)."""
        self.objects[key] = obj
        for owner in hint_owners:
            self._add_hint(owner, key)
        self.dirty.discard(key)
        self._before_change.pop(key, None)

    def saved(self) -> None:
        """The driver saved every dirty key: the store now holds what memory holds."""
        self.dirty.clear()
        self._before_change.clear()

    def revert_unsaved(self) -> set[bytes]:
        """The store refused the save: put every dirty key back to what it held before its
        first change (what the store holds), objects and hints; return those keys."""
        reverted = set(self.dirty)
        for key in reverted:
            obj, owners = self._before_change[key]
            if obj is None:
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            for owner in self.hints.owners(key) - owners:
                self.hints.discard((owner, key))
            for owner in owners:
                self.hints.add((owner, key))
        self.saved()
        return reverted

    def rebalance(self, old_home: Callable[[bytes], list[str]]) -> int:
        """After a ring change, owe each key to its new home nodes; return keys queued.

        A node that stays home for a key hands it to the home nodes that were not home
        before; a node that is no longer home hands it to every new home node and drops
        its copy once they all acked (``_handoff_done``). Hand-offs travel with ``tick``.
        """
        queued = 0
        for key in list(self.objects):
            home = self._home(key)
            previous = set(old_home(key))
            owners = home if self.node_id not in home else [n for n in home if n not in previous]
            for owner in owners:
                if owner != self.node_id and (owner, key) not in self.hints:
                    self._add_hint(owner, key)
                    queued += 1
        return queued

    def _maybe_pass_on(self, key: bytes) -> None:
        """A copy sent here by a node with an older ring, for a key this node is no longer
        home for: owe it to the home nodes, as ``rebalance`` would, so it reaches them and
        this copy goes once they all acked."""
        home = self._home(key)
        if self.node_id in home:
            return
        for owner in home:
            if (owner, key) not in self.hints:
                self._add_hint(owner, key)

    def _merge_in(self, key: bytes, obj: VersionedObject, hint_owner: str | None) -> None:
        self._store(key, merge(self.objects.get(key), obj, lww=self.config.lww), hint_owner)

    def _home(self, key: bytes) -> list[str]:
        return self.placement(key)[: self.config.replicas]

    def _handoff_done(self, owner: str, key: bytes) -> None:
        if (owner, key) not in self.hints:
            return
        self._touch(key)
        self.hints.discard((owner, key))
        if not self.hints.owners(key) and self.node_id not in self._home(key):
            self.objects.pop(key, None)

    def start_anti_entropy(self, peer: str) -> KVReady:
        return start_anti_entropy(self, peer)
