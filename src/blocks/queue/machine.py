"""``QueueMachine``: the replicated queue's state machine, a ``QueueBroker`` fed log records.

Theory of operation
-------------------
A replicated queue (``blocks.queue.replicated``) writes every call as a *record* to a
replicated log and answers it only once the record is committed and applied. Every node
applies the committed records, in log order, to its own ``QueueMachine``; because a record
carries everything the broker needs (the command with its ``now_ms`` stamped by the node that
wrote it, never the applying node's clock) and ``QueueBroker.execute`` is deterministic given
its commands, every node ends in the same state: the same message ids, receive counts,
receipts, invisibility deadlines, dead-letter moves, FIFO group locks and dedup entries.

A record is the msgpack of ``[origin, command]``, or of ``[origin, "batch", [command, ...]]``
for several commands applied in order as one record (a node writes the calls of one data-path
frame so: one log record, one fsync and one replication of it, not one per call). ``origin``
names the node that wrote it, the one a caller waits on, so only that node keeps the record's
outcomes for its callers. A
receive's ``visibility_ms`` may be None (the queue's default), resolved here from the applied
state, which is the same on every node. A command the broker refuses (``NotFound``,
``Conflict``, ...) is still applied: its advance of time changed the timers, the same on
every node, and its outcome is the error.

``encode_records`` splits the commands of one batch into records of at most ``RECORD_BYTES``
(halving); ``command_for_call`` turns a data-path wire call into its command.
"""

from __future__ import annotations

from typing import Any

from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, InvalidArgument
from blocks.queue.broker import QueueBroker
from blocks.queue.config import check_name

__all__ = [
    "RECORD_BYTES",
    "QueueMachine",
    "command_for_call",
    "decode_commands",
    "decode_record",
    "encode_batch",
    "encode_record",
    "encode_records",
]

Outcome = tuple[bool, Any]  # (True, result) or (False, the BlocksError raised)
BATCH = "batch"
RECORD_BYTES = 256 << 10  # a batch of calls is split into records of at most this much
_ARITY = {"send": 6, "receive": 3, "ack": 2, "nack": 3, "extend": 3}  # a wire call's arguments


def encode_record(origin: str, command: list[Any]) -> bytes:
    return pack([origin, command])


def encode_batch(origin: str, commands: list[list[Any]]) -> bytes:
    """One record of ``commands`` (one command: the plain form)."""
    if len(commands) == 1:
        return pack([origin, commands[0]])
    return pack([origin, BATCH, commands])


def encode_records(origin: str, commands: list[list[Any]]) -> list[tuple[bytes, int]]:
    """``commands`` as records ``(value, commands in it)``, in order: one record for all of
    them unless it would be over ``RECORD_BYTES``, then halves (a lone command is one record
    whatever its size: the log refuses it if too big, as before)."""
    value = encode_batch(origin, commands)
    if len(value) <= RECORD_BYTES or len(commands) == 1:
        return [(value, len(commands))]
    half = len(commands) // 2
    return encode_records(origin, commands[:half]) + encode_records(origin, commands[half:])


def command_for_call(call: Any, now_ms: int) -> list[Any]:
    """The command for a wire call (as ``LocalQueue.command_for``, but a receive's default
    visibility is resolved by the state machine, which every node holds alike)."""
    if not isinstance(call, list) or not call or _ARITY.get(call[0]) != len(call) - 1:
        raise InvalidArgument(f"malformed call {str(call)[:80]!r}")
    verb, name, *rest = call
    check_name(name)
    return [verb, now_ms, name, *rest]


def decode_record(value: bytes) -> tuple[str, list[Any]]:
    """``(origin, command)`` of a one-command record; ``InvalidArgument`` for a value that is
    not one."""
    origin, commands = decode_commands(value)
    if len(commands) != 1:
        raise InvalidArgument("a queue log record of one command is [origin, command]")
    return origin, commands[0]


def decode_commands(value: bytes) -> tuple[str, list[list[Any]]]:
    """``(origin, commands)`` of any record; ``InvalidArgument`` for a value that is not one
    (a malformed command inside a batch is the broker's to refuse, as a lone one is)."""
    try:
        record = unpack(value)
    except (BlocksError, TypeError, ValueError):
        raise InvalidArgument("a queue log record is [origin, command]") from None
    if isinstance(record, list) and len(record) == 2:
        origin, command = record
        if isinstance(origin, str) and isinstance(command, list):
            return origin, [command]
    elif isinstance(record, list) and len(record) == 3 and record[1] == BATCH:
        origin, _, commands = record
        if isinstance(origin, str) and isinstance(commands, list) and commands:
            return origin, commands
    raise InvalidArgument("a queue log record is [origin, command]")


class QueueMachine:
    """A ``QueueBroker`` driven by log records in offset order; see the module docs."""

    def __init__(self) -> None:
        self.broker = QueueBroker()
        self.applied = 0  # the next log offset to apply: every record below it is applied
        self.records = 0  # records applied (offsets have gaps where the log has control records)

    def apply(self, offset: int, value: bytes) -> tuple[str, list[Any], Outcome]:
        """Apply the one-command record at ``offset`` (above every offset applied before);
        return its origin, its command and its outcome (of a batch: its first's)."""
        origin, applied = self.apply_record(offset, value)
        if not applied:
            return origin, [], (False, InvalidArgument("a queue log record is [origin, command]"))
        return origin, applied[0][0], applied[0][1]

    def apply_record(
        self, offset: int, value: bytes
    ) -> tuple[str, list[tuple[list[Any], Outcome]]]:
        """Apply the record at ``offset`` (above every offset applied before), each of its
        commands in order; return its origin and each command with its outcome (none for a
        value that is not a record)."""
        assert offset >= self.applied, "records are applied once, in offset order"
        self.applied = offset + 1
        self.records += 1
        try:
            origin, commands = decode_commands(value)
        except InvalidArgument:
            return "", []
        applied: list[tuple[list[Any], Outcome]] = []
        for command in commands:
            try:
                applied.append((command, (True, self.execute(command))))
            except BlocksError as error:
                applied.append((command, (False, error)))
        return origin, applied

    def execute(self, command: list[Any]) -> Any:
        """Run one command on the broker, resolving a receive's default visibility."""
        if (
            isinstance(command, list)
            and len(command) == 5
            and command[0] == "receive"
            and command[4] is None
            and isinstance(command[2], str)
        ):
            visibility_ms = self.broker.queue(command[2]).config.visibility_ms
            command = [*command[:4], visibility_ms]
        return self.broker.execute(command)

    def snapshot(self) -> dict[str, Any]:
        """The applied state (for comparing replicas)."""
        return {"applied": self.applied, "broker": self.broker.snapshot()}

    def to_snapshot(self) -> dict[str, Any]:
        """What a snapshot file holds: the applied state and the count of records."""
        return {**self.snapshot(), "records": self.records}

    @classmethod
    def from_snapshot(cls, data: Any) -> QueueMachine:
        """The machine ``to_snapshot`` wrote; ``InvalidArgument`` for anything else."""
        if not isinstance(data, dict) or type(data.get("applied")) is not int:
            raise InvalidArgument("a queue snapshot is a map with an integer applied offset")
        machine = cls()
        machine.broker = QueueBroker.restore(data.get("broker"))
        machine.applied = data["applied"]
        machine.records = int(data.get("records", 0))
        return machine
