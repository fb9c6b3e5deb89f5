"""counters workload: clients add 1 to one counter through every node; after the nemesis,
every node must converge on one value between the acknowledged increments and those plus
the ones whose outcome is unknown (an increment is acknowledged when its node applied it).

The verdict's ``lost`` holds the shortfall (fewer than acknowledged: an increment lost),
``never_written`` the excess (more than was ever sent), ``problems`` a failure to converge."""

from __future__ import annotations

import asyncio
import time

from blocks.counters.client import CountersClient
from blocks.testing.checkers import check_counter_convergence, pair_operations
from blocks.testing.history import History, OpType, UniqueValuesCheck
from blocks.testing.workloads.base import ERROR_BACKOFF_S, Verdict

__all__ = ["CONVERGE_TIMEOUT_S", "CountersWorkload"]

CONVERGE_TIMEOUT_S = 30.0
CONVERGE_POLL_S = 0.1


class CountersWorkload:
    """``CountersWorkload(addresses, token, seed)``: one client per node."""

    def __init__(self, addresses: list[str], token: str, seed: int, *, op_timeout_s: float = 2.0):
        self.clients = [CountersClient(a, token=token, timeout_s=op_timeout_s) for a in addresses]
        self.counter = f"nemesis-{seed}"
        self.history = History()

    async def run(self, done: asyncio.Event) -> None:
        await asyncio.gather(*(self._adder(n, done) for n in range(len(self.clients))))

    async def _adder(self, node: int, done: asyncio.Event) -> None:
        client = self.clients[node]
        while not done.is_set():
            add = client.increment(self.counter, 1)
            if await self.history.call(node, "increment", self.counter, 1, add) is None:
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def _values(self) -> list[int | None]:
        values: list[int | None] = []
        for client in self.clients:
            try:
                values.append(await client.value(self.counter))
            except Exception:  # a node still settling: not converged yet
                values.append(None)
        return values

    async def verify(self) -> Verdict:
        acknowledged = len(self.history.completions(OpType.OK, "increment"))
        unknown = len(self.history.completions(OpType.INFO, "increment"))
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        values = await self._values()
        while time.monotonic() < deadline:
            if None not in values and len(set(values)) == 1:
                break
            await asyncio.sleep(CONVERGE_POLL_S)
            values = await self._values()
        problems = [] if None not in values and len(set(values)) == 1 else [f"diverged: {values}"]
        reported = [v for v in values if v is not None]
        convergence = check_counter_convergence(
            pair_operations(self.history), {self.counter: reported}
        )
        if not convergence.valid:
            problems.append(f"counters checker: {convergence.describe()}")
        final = max((v for v in values if v is not None), default=0)
        check = UniqueValuesCheck(
            acknowledged=acknowledged,
            indeterminate=unknown,
            lost=(f"short by {acknowledged - final}",) if final < acknowledged else (),
            never_written=(f"over by {final - acknowledged - unknown}",)
            if final > acknowledged + unknown
            else (),
        )
        completed = sum(1 for op in self.history.ops if op.type is not OpType.INVOKE)
        return Verdict(check, completed, tuple(problems))

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
