"""Consumer groups and committed offsets as a pure state machine.

Theory of operation
-------------------
A group consumes one topic. Members join with an id and then heartbeat; a member that sends
no heartbeat for ``session_timeout_ms`` is removed (``expire``), as is one that leaves. Every
change of membership starts a new *generation* and recomputes the assignment at once:
members sorted by id, partition ``p`` goes to member ``p mod n``. A heartbeat returns the
current generation and the caller's partitions, so a member learns of a rebalance on its next
heartbeat and switches to its new partitions.

Commits are fenced: a commit from a member that is not in the group, or that names an older
generation, or a partition not assigned to it, raises ``Conflict`` (it must rejoin), so a
member that was presumed dead cannot overwrite the progress of the member that took over.
A committed offset never moves backwards: committing a lower offset keeps the higher one.
``committed_offsets`` is what the durable broker logs and replays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blocks.core.errors import Conflict, InvalidArgument, Overloaded
from blocks.pubsub.api import Assignment

__all__ = ["Assignment", "GroupCoordinator"]

GROUPS_MAX = 10_000
MEMBERS_MAX = 1_000


@dataclass(slots=True)
class _Group:
    topic: str
    partitions: int
    generation: int = 0
    members: dict[str, int] = field(default_factory=dict)  # member -> last heartbeat ms
    assignment: dict[str, tuple[int, ...]] = field(default_factory=dict)


class GroupCoordinator:
    """Groups, their members and their committed offsets; time comes in as ``now_ms``."""

    def __init__(self, session_timeout_ms: int = 10_000) -> None:
        if session_timeout_ms <= 0:
            raise InvalidArgument("session_timeout_ms must be positive")
        self.session_timeout_ms = session_timeout_ms
        self._groups: dict[str, _Group] = {}
        self._committed: dict[tuple[str, str, int], int] = {}

    def join(self, group: str, topic: str, partitions: int, member: str, now_ms: int) -> Assignment:
        """Add ``member`` (or refresh it); rebalance if membership changed."""
        self.expire(now_ms)
        state = self._groups.get(group)
        if state is None:
            if len(self._groups) >= GROUPS_MAX:
                raise Overloaded(f"at most {GROUPS_MAX} consumer groups")
            state = self._groups[group] = _Group(topic, partitions)
        if state.topic != topic:
            raise Conflict(f"group {group!r} consumes topic {state.topic!r}")
        if member not in state.members:
            if len(state.members) >= MEMBERS_MAX:
                raise Overloaded(f"at most {MEMBERS_MAX} members per group")
            state.members[member] = now_ms
            self._rebalance(state)
        state.members[member] = now_ms
        return self._assignment(group, state, member)

    def heartbeat(self, group: str, member: str, now_ms: int) -> Assignment:
        """Keep ``member`` alive; ``Conflict`` if it was removed (it must join again)."""
        self.expire(now_ms)
        state = self._groups.get(group)
        if state is None or member not in state.members:
            raise Conflict(f"{member!r} is not a member of group {group!r}; join again")
        state.members[member] = now_ms
        return self._assignment(group, state, member)

    def leave(self, group: str, member: str, now_ms: int) -> None:
        self.expire(now_ms)
        state = self._groups.get(group)
        if state is not None and state.members.pop(member, None) is not None:
            self._rebalance(state)

    def expire(self, now_ms: int) -> list[tuple[str, str]]:
        """Remove members silent for ``session_timeout_ms``; return ``(group, member)``."""
        removed = []
        for name, state in self._groups.items():
            dead = [
                m for m, seen in state.members.items() if now_ms - seen >= self.session_timeout_ms
            ]
            for member in dead:
                del state.members[member]
                removed.append((name, member))
            if dead:
                self._rebalance(state)
        return removed

    def commit(self, group: str, member: str, generation: int, partition: int, offset: int) -> int:
        """Record ``offset`` as the group's next offset to read; return the stored one."""
        state = self._groups.get(group)
        if state is None or member not in state.members or generation != state.generation:
            raise Conflict(f"stale member or generation for group {group!r}; join again")
        if partition not in state.assignment.get(member, ()):
            raise Conflict(f"partition {partition} is not assigned to {member!r}")
        return self.restore_commit(group, state.topic, partition, offset)

    def restore_commit(self, group: str, topic: str, partition: int, offset: int) -> int:
        """Apply a commit without fencing (replay of the offsets log)."""
        if type(offset) is not int or offset < 0:
            raise InvalidArgument("an offset is a non-negative integer")
        key = (group, topic, partition)
        stored = max(self._committed.get(key, 0), offset)
        self._committed[key] = stored
        return stored

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        return self._committed.get((group, topic, partition))

    def committed_offsets(self) -> dict[tuple[str, str, int], int]:
        return dict(self._committed)

    def topic_of(self, group: str) -> str | None:
        state = self._groups.get(group)
        return None if state is None else state.topic

    def _rebalance(self, state: _Group) -> None:
        state.generation += 1
        members = sorted(state.members)
        state.assignment = {
            member: tuple(p for p in range(state.partitions) if p % len(members) == i)
            for i, member in enumerate(members)
        }

    def _assignment(self, group: str, state: _Group, member: str) -> Assignment:
        return Assignment(group, member, state.generation, state.assignment.get(member, ()))
