"""Object (blob) and register histories: byte-identical values, and the right final value.

``check_object_history`` reads ``Operation``s of ``put`` (value: the bytes), ``delete`` and
``get`` (output: the bytes read, or None for a missing object) per key, plus the final state
read after the run, and finds:

* **corrupted reads**: a ``get`` that returned bytes no ``put`` of that key ever sent (a
  truncated, mixed or flipped object is never equal to one that was written);
* **wrong final values**: a key whose final value is not one that may legally be last. A put
  or delete is *superseded* when another acknowledged one of the key was invoked after it
  completed; the final value must come from one that is not (an ``info`` one never completes,
  so it is never superseded, and it may also never have happened). No acknowledged write and
  none unknown: the object must be absent.

Bytes are compared whole; give each put a distinct body so that a stale object is visible.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from blocks.testing.checkers.operations import Operation
from blocks.testing.history import Verdict

__all__ = ["ObjectCheck", "check_object_history"]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class ObjectCheck(Verdict):
    """The verdict; ``valid`` when no read is corrupted and every final value is allowed."""

    failures = ("corrupted_reads", "wrong_final")
    keys: int
    corrupted_reads: tuple[Operation, ...]
    wrong_final: tuple[tuple[Hashable, object], ...]  # (key, final value found)

    def describe(self) -> str:
        return f"keys={self.keys} {self.failure_counts()}" + self.first_of("wrong_final")


def check_object_history(
    operations: Iterable[Operation],
    final: Mapping[Hashable, bytes | None],
    *,
    put: str = "put",
    delete: str = "delete",
    get: str = "get",
) -> ObjectCheck:
    """Check reads and final values; keys absent from ``final`` are not checked at the end."""
    writes: dict[Hashable, list[Operation]] = defaultdict(list)
    reads: list[Operation] = []
    for operation in operations:
        if operation.status == "fail":
            continue
        if operation.function in (put, delete):
            writes[operation.key].append(operation)
        elif operation.function == get and operation.status == "ok":
            reads.append(operation)
    bodies = {
        key: {_body(op, put) for op in ops if op.function == put} for key, ops in writes.items()
    }
    corrupted = tuple(
        op for op in reads if op.output is not None and op.output not in bodies.get(op.key, ())
    )
    wrong: list[tuple[Hashable, object]] = []
    for key, value in sorted(final.items(), key=lambda item: repr(item[0])):
        if value not in _allowed_finals(writes.get(key, []), put):
            wrong.append((key, value))
    keys = len(set(writes) | set(final))
    return ObjectCheck(keys, corrupted, tuple(wrong))


def _body(operation: Operation, put: str) -> bytes | None:
    return operation.value if operation.function == put else None  # type: ignore[return-value]


def _allowed_finals(ops: list[Operation], put: str) -> list[bytes | None]:
    acknowledged_invokes = sorted(op.invoke_ns for op in ops if op.status == "ok")
    allowed: list[bytes | None] = []
    if not any(op.status == "ok" for op in ops):
        allowed.append(None)  # nothing certainly happened
    for op in ops:
        superseded = op.complete_ns is not None and any(
            invoke > op.complete_ns for invoke in acknowledged_invokes
        )
        if not superseded:
            allowed.append(_body(op, put))
    return allowed
