"""sequencer workload: clients take batches of Snowflake IDs and ticket ranges; every ID and
every ticket must be unique, and the IDs each client gets from one server must increase,
across kills, restarts and clock jumps of the server (the server keeps a persisted
high-water mark for that). ``per_worker=True`` relaxes the order to each worker id, the
promise of one ``IdGenerator``, for servers that do not keep one."""

from __future__ import annotations

import asyncio

from blocks.sequencer.client import SequencerClient
from blocks.sequencer.snowflake import Layout
from blocks.testing.history import History, OpType, UniqueValuesCheck
from blocks.testing.workloads.base import ERROR_BACKOFF_S, Verdict

__all__ = ["SequencerWorkload", "worker_id"]

IDS_PER_CALL = 10
LAYOUT = Layout()  # the server's default


def worker_id(snowflake_id: int) -> int:
    """The worker-id field of an ID in the default layout."""
    return (snowflake_id >> LAYOUT.sequence_bits) & ((1 << LAYOUT.worker_bits) - 1)


TICKETS_PER_CALL = 5


class SequencerWorkload:
    """``SequencerWorkload(address, token)``: ``clients`` callers on one server."""

    def __init__(
        self,
        address: str,
        token: str,
        *,
        clients: int = 3,
        op_timeout_s: float = 2.0,
        per_worker: bool = False,
    ):
        self.per_worker = per_worker
        self.clients = [
            SequencerClient(address, token=token, timeout_s=op_timeout_s) for _ in range(clients)
        ]
        self.history = History()

    async def run(self, done: asyncio.Event) -> None:
        await asyncio.gather(*(self._caller(n, done) for n in range(len(self.clients))))

    async def _caller(self, number: int, done: asyncio.Event) -> None:
        client = self.clients[number]
        while not done.is_set():
            ids = client.next_ids(IDS_PER_CALL)
            if await self.history.call(number, "ids", None, None, ids, read=True) is None:
                await asyncio.sleep(ERROR_BACKOFF_S)
            tickets = client.allocate_tickets(TICKETS_PER_CALL)
            if await self.history.call(number, "tickets", None, None, tickets, read=True) is None:
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def verify(self) -> Verdict:
        problems: list[str] = []
        for kind in ("ids", "tickets"):
            seen: dict[int, int] = {}
            last: dict[tuple[int, int], int] = {}
            for op in self.history.completions(OpType.OK, kind):
                for value in op.value:  # type: ignore[attr-defined]
                    if value in seen:
                        problems.append(f"{kind}: {value} given to {seen[value]} and {op.client}")
                    seen[value] = op.client
                    generator = (op.client, worker_id(value) if self.per_worker else 0)
                    if kind == "ids" and value <= last.get(generator, -1):
                        problems.append(f"ids: {value} after {last[generator]} ({generator})")
                    last[generator] = value
        ok = [op for op in self.history.ops if op.type is OpType.OK]
        unknown = self.history.completions(OpType.INFO)
        check = UniqueValuesCheck(len(ok), len(unknown), (), ())
        return Verdict(check, len(ok) + len(unknown), tuple(problems[:20]))

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
