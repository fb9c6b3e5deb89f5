"""Histories of client operations, and the simple checks every block must pass.

A workload records each operation twice: an ``invoke`` when it is issued, then its
completion: ``ok`` (it happened), ``fail`` (it certainly did not happen: the server refused
it before acting) or ``info`` (unknown: a timeout or a lost connection; it may have happened,
now or later). ``History.call`` does the bookkeeping around one awaited client call; an
exception is ``info`` unless its type is listed as a definite failure.

The two checks here need no model of the block, only unique values (a workload writes each
value once):

* ``check_unique_values``: nothing acknowledged is lost (every ``ok`` write is in the final
  state) and nothing is read that was never written (every value read, during the run or at
  the end, was invoked by some write). Values whose write ended ``info`` may be present or
  absent.

Stronger checkers (linearizability, per-partition order, convergence) read the same
``History``.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

__all__ = [
    "OPS_MAX",
    "History",
    "HistoryFull",
    "Op",
    "OpType",
    "UniqueValuesCheck",
    "check_unique_values",
]

OPS_MAX = 1_000_000
T = TypeVar("T")


class HistoryFull(Exception):
    """More than ``OPS_MAX`` operations were recorded: shorten the run."""


class OpType(enum.Enum):
    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Op:
    """One event: ``client`` issued (or completed) ``function`` on ``key`` with ``value``.

    ``time_ns`` is ``time.monotonic_ns()`` at the event; completions of reads carry the
    value read."""

    index: int
    client: int
    type: OpType
    function: str
    key: Hashable
    value: object
    time_ns: int
    error: str = ""


@dataclass(slots=True)
class History:
    """An append-only, thread-safe list of ``Op``s, bounded by ``OPS_MAX``."""

    ops: list[Op] = field(default_factory=list)
    clock_ns: Callable[[], int] = time.monotonic_ns
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        client: int,
        type: OpType,
        function: str,
        key: Hashable,
        value: object = None,
        error: str = "",
    ) -> Op:
        with self._lock:
            if len(self.ops) >= OPS_MAX:
                raise HistoryFull(f"a history holds at most {OPS_MAX} operations")
            op = Op(len(self.ops), client, type, function, key, value, self.clock_ns(), error)
            self.ops.append(op)
            return op

    async def call(
        self,
        client: int,
        function: str,
        key: Hashable,
        value: object,
        awaitable: Awaitable[T],
        *,
        definite: tuple[type[BaseException], ...] = (),
        read: bool = False,
    ) -> T | None:
        """Record ``invoke``, await, record ``ok`` (with the result if ``read``), or ``fail``
        for a ``definite`` error, or ``info`` for any other ``Exception``; returns the result
        or None when it raised."""
        self.add(client, OpType.INVOKE, function, key, value)
        try:
            result = await awaitable
        except definite as error:
            self.add(client, OpType.FAIL, function, key, value, repr(error))
            return None
        except Exception as error:  # unknown outcome: it may have happened
            self.add(client, OpType.INFO, function, key, value, repr(error))
            return None
        self.add(client, OpType.OK, function, key, result if read else value)
        return result

    def completions(self, type: OpType, function: str | None = None) -> list[Op]:
        with self._lock:
            return [
                op
                for op in self.ops
                if op.type is type and (function is None or op.function == function)
            ]

    def counts(self) -> dict[str, int]:
        """How many operations ended each way (``ok``, ``fail``, ``info``) and were invoked."""
        with self._lock:
            out = {t.value: 0 for t in OpType}
            for op in self.ops:
                out[op.type.value] += 1
            return out


class Verdict:
    """The shape of a checker's verdict: ``valid`` when every field named in ``failures``
    (the evidence of each way the history can be wrong) is empty. Subclasses are frozen
    dataclasses that set ``failures`` and write their own ``describe()``."""

    __slots__ = ()
    failures: ClassVar[tuple[str, ...]] = ()

    @property
    def valid(self) -> bool:
        return not any(getattr(self, name) for name in self.failures)

    def failure_counts(self) -> str:
        """``name=count`` for each field in ``failures``, in order, for ``describe()``."""
        return " ".join(f"{name}={len(getattr(self, name))}" for name in self.failures)

    def first_of(self, name: str) -> str:
        """`` first: <repr of field name's first item>``, "" when it is empty."""
        items = getattr(self, name)
        return f" first: {items[0]!r}" if items else ""


@dataclass(frozen=True, slots=True)
class UniqueValuesCheck(Verdict):
    """The verdict of ``check_unique_values``; ``valid`` when nothing is lost or invented."""

    failures = ("lost", "never_written")
    acknowledged: int
    indeterminate: int
    lost: tuple[object, ...]
    never_written: tuple[object, ...]

    def describe(self) -> str:
        return (
            f"acknowledged={self.acknowledged} indeterminate={self.indeterminate} "
            f"lost={len(self.lost)} never_written={len(self.never_written)}"
            + (f" first lost: {list(self.lost[:5])!r}" if self.lost else "")
            + (f" first invented: {list(self.never_written[:5])!r}" if self.never_written else "")
        )


def check_unique_values(
    history: History,
    final: Iterable[object],
    *,
    write: str = "write",
    read: str = "read",
) -> UniqueValuesCheck:
    """Every ``ok`` ``write`` value is in ``final``; every value in ``final`` and in each
    ``ok`` ``read`` (a read's value is an iterable of values, or one value, or None) was
    invoked by a ``write``."""
    invoked = {op.value for op in history.completions(OpType.INVOKE, write)}
    acknowledged = [op.value for op in history.completions(OpType.OK, write)]
    indeterminate = history.completions(OpType.INFO, write)
    present = set(final)
    seen = set(present)
    for op in history.completions(OpType.OK, read):
        if op.value is None:
            continue
        if isinstance(op.value, (list, tuple, set, frozenset)):
            seen.update(op.value)
        else:
            seen.add(op.value)
    lost = tuple(value for value in acknowledged if value not in present)
    never_written = tuple(sorted((v for v in seen if v not in invoked), key=repr))
    return UniqueValuesCheck(len(acknowledged), len(indeterminate), lost, never_written)
