"""Complete operations from a ``History`` of events: the input every checker reads.

A ``History`` (``blocks.testing.history``) holds events: each client's ``invoke`` followed by
its completion, ``ok``, ``fail`` or ``info``. ``pair_operations`` turns them into one
``Operation`` per invocation, with its invoke and completion times. An ``info`` completion
(unknown outcome: it may take effect at any time after its invoke, or never) gets
``complete_ns = None``: checkers treat it as still in flight at the end of time. A ``fail``
is kept (``status == "fail"``) so checkers may count it, but it certainly had no effect.

A client must have at most one operation in flight; anything else is a malformed history and
raises ``InvalidHistory`` (a checker's verdict on a malformed history would mean nothing).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Literal

from blocks.core.errors import InvalidArgument
from blocks.testing.history import History, Op, OpType

__all__ = ["InvalidHistory", "Operation", "Status", "pair_operations"]

Status = Literal["ok", "fail", "info"]


class InvalidHistory(InvalidArgument):
    """The events cannot be paired: a completion without an invoke, or two in flight."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One invocation and how it ended.

    ``value`` is what was asked (the value written, a CAS's ``(expected, new)``); ``output``
    is what came back on ``ok`` (the value read), else None. ``complete_ns`` is None for
    ``info``: the operation may have happened at any time after ``invoke_ns``, or never.
    """

    index: int  # position of the invoke event in the history
    client: int
    function: str
    key: Hashable
    value: object
    output: object
    status: Status
    invoke_ns: int
    complete_ns: int | None

    def __post_init__(self) -> None:
        if self.complete_ns is not None and self.complete_ns < self.invoke_ns:
            raise InvalidHistory(f"operation {self.index} completes before it is invoked")
        if (self.complete_ns is None) != (self.status == "info"):
            raise InvalidHistory(f"operation {self.index}: only info has no completion time")


_STATUS: dict[OpType, Status] = {OpType.OK: "ok", OpType.FAIL: "fail", OpType.INFO: "info"}


def pair_operations(events: History | Iterable[Op]) -> list[Operation]:
    """One ``Operation`` per invoke, in invoke order; in-flight invokes end as ``info``."""
    ops = list(events.ops) if isinstance(events, History) else list(events)
    pending: dict[int, Op] = {}
    done: list[Operation] = []
    for op in ops:
        if op.type is OpType.INVOKE:
            if op.client in pending:
                raise InvalidHistory(f"client {op.client} invoked twice without a completion")
            pending[op.client] = op
            continue
        invoke = pending.pop(op.client, None)
        if invoke is None:
            raise InvalidHistory(f"event {op.index}: client {op.client} completed nothing")
        if invoke.function != op.function:
            raise InvalidHistory(f"event {op.index} completes {invoke.function!r} as another")
        status: Status = _STATUS[op.type]
        done.append(
            Operation(
                index=invoke.index,
                client=op.client,
                function=op.function,
                key=invoke.key,
                value=invoke.value,
                output=op.value if status == "ok" else None,
                status=status,
                invoke_ns=invoke.time_ns,
                complete_ns=None if status == "info" else op.time_ns,
            )
        )
    for invoke in pending.values():  # never completed: unknown
        done.append(
            Operation(
                invoke.index,
                invoke.client,
                invoke.function,
                invoke.key,
                invoke.value,
                None,
                "info",
                invoke.time_ns,
                None,
            )
        )
    done.sort(key=lambda operation: operation.index)
    return done
