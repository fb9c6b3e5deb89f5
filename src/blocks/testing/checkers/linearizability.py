"""Linearizability of a history against a sequential model, per key (WGL search, memoised).

Theory of operation
-------------------
A history is linearizable when every operation can be given one instant between its invoke
and its completion such that, in that order, the operations are a legal run of the
sequential model (a register: a read returns the last value written). ``check_linearizable``
decides it with the search of Wing and Gong as refined by Lowe: lay the invokes and
completions on one time line; walk it, and at an invoke try to *linearize* that operation now
(apply it to the model; if legal, take it out of the line and start again from the front);
reaching a completion means the operation completing there was never placed, so undo the last
choice and try the next one. Two states with the same set of linearized operations and the
same model state have the same future, so each such pair is searched once (the memo).

Operations that ended ``info`` may take effect at any instant after their invoke or never:
their completion lies at the end of time, so the search succeeds as soon as every other
operation is placed. Failed operations had no effect and reads with unknown output constrain
nothing; both are left out.

Registers are independent per key, and linearizability composes per object, so
``check_register_histories`` checks each key alone: the search is exponential in the
concurrency of one key, not of the whole history. The search is bounded by ``steps_max``;
past it the verdict is ``None`` (unknown), never a guess. A failure carries a counterexample:
the longest legal prefix found and the operation that could not follow it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from blocks.core.errors import InvalidArgument
from blocks.testing.checkers.operations import Operation

__all__ = [
    "STEPS_MAX",
    "KeyVerdict",
    "LinearizabilityReport",
    "Model",
    "RegisterModel",
    "check_linearizable",
    "check_register_histories",
]

STEPS_MAX = 2_000_000
"""Default bound on search steps per key (each a model step or a backtrack)."""


class Model(Protocol):
    """A sequential specification: a start state and a step function. States must be hashable
    and compare equal exactly when they have the same future."""

    def initial(self) -> Hashable: ...

    def step(self, state: Hashable, operation: Operation) -> tuple[bool, Hashable]:
        """``(legal, next_state)``: may ``operation`` (with its output) happen in ``state``?"""
        ...


@dataclass(frozen=True, slots=True)
class RegisterModel:
    """A register: ``write`` sets the value; ``read`` returns it (``output``); ``cas`` with
    value ``(expected, new)`` succeeds (status ok) only if the value equals ``expected``.
    A missing key reads as ``initial``."""

    initial_value: Hashable = None

    def initial(self) -> Hashable:
        return self.initial_value

    def step(self, state: Hashable, operation: Operation) -> tuple[bool, Hashable]:
        if operation.function == "read":
            return operation.output == state, state
        if operation.function == "write":
            return True, _hashable(operation.value)
        if operation.function == "cas":
            pair = operation.value
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise InvalidArgument(f"a cas takes (expected, new), got {pair!r}")
            return (True, _hashable(pair[1])) if state == pair[0] else (False, state)
        raise InvalidArgument(f"a register has no operation {operation.function!r}")


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """The verdict for one key: ``valid`` is True, False, or None when the search bound ran
    out. On False, ``prefix`` is the longest legal order found and ``blocked`` the operation
    that no extension of it could place before its completion."""

    key: Hashable
    valid: bool | None
    operations: int
    steps: int
    prefix: tuple[Operation, ...] = ()
    blocked: Operation | None = None


@dataclass(frozen=True, slots=True)
class LinearizabilityReport:
    """Per-key verdicts. ``valid``: False if any key failed, None if any was undecided."""

    verdicts: tuple[KeyVerdict, ...]

    @property
    def valid(self) -> bool | None:
        if any(v.valid is False for v in self.verdicts):
            return False
        return None if any(v.valid is None for v in self.verdicts) else True

    @property
    def failures(self) -> tuple[KeyVerdict, ...]:
        return tuple(v for v in self.verdicts if v.valid is False)

    def describe(self) -> str:
        undecided = sum(1 for v in self.verdicts if v.valid is None)
        text = f"keys={len(self.verdicts)} failed={len(self.failures)} undecided={undecided}"
        for verdict in self.failures[:3]:
            order = ", ".join(_show(op) for op in verdict.prefix[-6:])
            blocked = _show(verdict.blocked) if verdict.blocked else "?"
            text += f"\n  key {verdict.key!r}: after [... {order}] cannot place {blocked}"
        return text


def _hashable(value: object) -> Hashable:
    if not isinstance(value, Hashable):
        raise InvalidArgument(f"register values must be hashable, got {type(value).__name__}")
    return value


def _show(op: Operation) -> str:
    shown = op.output if op.function == "read" else op.value
    return f"{op.function}({shown!r})#{op.index}@client{op.client}"


def check_register_histories(
    operations: Iterable[Operation],
    *,
    initial: Hashable = None,
    steps_max: int = STEPS_MAX,
) -> LinearizabilityReport:
    """Check every key's operations against a register (see ``RegisterModel``)."""
    by_key: dict[Hashable, list[Operation]] = defaultdict(list)
    for operation in operations:
        by_key[operation.key].append(operation)
    model = RegisterModel(initial)
    verdicts = [
        check_linearizable(ops, model, key=key, steps_max=steps_max)
        for key, ops in sorted(by_key.items(), key=lambda item: repr(item[0]))
    ]
    return LinearizabilityReport(tuple(verdicts))


def _relevant(operation: Operation) -> bool:
    if operation.status == "fail":
        return False
    return not (operation.status == "info" and operation.function == "read")


def check_linearizable(
    operations: Sequence[Operation],
    model: Model,
    *,
    key: Hashable = None,
    steps_max: int = STEPS_MAX,
) -> KeyVerdict:
    """Is this one object's history linearizable with respect to ``model``?"""
    if steps_max < 1:
        raise InvalidArgument(f"steps_max must be >= 1, got {steps_max}")
    ops = [op for op in operations if _relevant(op)]
    return _Search(ops, model, key, steps_max).run()


class _Search:
    """The WGL walk over a doubly linked list of call and return entries."""

    def __init__(self, ops: list[Operation], model: Model, key: Hashable, steps_max: int):
        self.ops, self.model, self.key, self.steps_max = ops, model, key, steps_max
        end = max((op.complete_ns or op.invoke_ns for op in ops), default=0) + 1
        # Entries 1..2n; 0 is the head. Calls sort before returns at equal times (concurrent).
        timeline = sorted(
            [(op.invoke_ns, 0, number) for number, op in enumerate(ops)]
            + [
                (op.complete_ns if op.complete_ns is not None else end, 1, number)
                for number, op in enumerate(ops)
            ]
        )
        size = len(timeline) + 1
        self.is_call = [False] * size
        self.op_of = [-1] * size
        self.return_of = [0] * size  # for a call entry: its return entry
        self.is_info_return = [False] * size
        call_entry: dict[int, int] = {}
        for position, (_, kind, number) in enumerate(timeline, start=1):
            self.op_of[position] = number
            if kind == 0:
                self.is_call[position] = True
                call_entry[number] = position
            else:
                self.return_of[call_entry[number]] = position
                self.is_info_return[position] = ops[number].complete_ns is None
        self.next = [*range(1, size), 0]
        self.prev = [size - 1, *range(0, size - 1)]
        self.next[size - 1] = 0

    def _lift(self, call: int) -> None:
        for entry in (call, self.return_of[call]):
            self.next[self.prev[entry]] = self.next[entry]
            self.prev[self.next[entry]] = self.prev[entry]

    def _unlift(self, call: int) -> None:
        for entry in (self.return_of[call], call):
            self.prev[self.next[entry]] = entry
            self.next[self.prev[entry]] = entry

    def run(self) -> KeyVerdict:
        ops, model = self.ops, self.model
        state = model.initial()
        linearized = 0
        stack: list[tuple[int, Hashable]] = []  # (call entry, state before it)
        memo: set[tuple[int, Hashable]] = set()
        best: tuple[int, ...] = ()
        blocked: int | None = None
        steps = 0
        entry = self.next[0]
        while entry != 0 and not self.is_info_return[entry]:
            steps += 1
            if steps > self.steps_max:
                return KeyVerdict(self.key, None, len(ops), steps)
            number = self.op_of[entry]
            if self.is_call[entry]:
                legal, after = model.step(state, ops[number])
                marked = linearized | (1 << number)
                if legal and (marked, after) not in memo:
                    memo.add((marked, after))
                    stack.append((entry, state))
                    state, linearized = after, marked
                    self._lift(entry)
                    entry = self.next[0]
                    continue
                entry = self.next[entry]
                continue
            # A return whose operation is not placed: this branch is dead.
            if len(stack) >= len(best) or blocked is None:
                best = tuple(self.op_of[call] for call, _ in stack)
                blocked = number
            if not stack:
                prefix = tuple(ops[n] for n in best)
                return KeyVerdict(self.key, False, len(ops), steps, prefix, ops[blocked])
            call, state = stack.pop()
            linearized &= ~(1 << self.op_of[call])
            self._unlift(call)
            entry = self.next[call]
        return KeyVerdict(self.key, True, len(ops), steps)
