"""kv workload: writers put unique keys (value = key), a reader reads keys already written.

The final state is each written key read once more (R of N); a key whose write was
acknowledged must read back its value, and no read may return a value never written. Each
key's history must also be linearizable as a register (``check_register_histories``): with
R+W>N, a read that starts after a write was acknowledged returns it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from blocks.kv.client import KVClient, connect
from blocks.testing.checkers import check_register_histories, pair_operations
from blocks.testing.history import History
from blocks.testing.workloads.base import ERROR_BACKOFF_S, Verdict, gather_bounded, judge, retrying

__all__ = ["KvWorkload"]


class KvWorkload:
    """Build with ``await KvWorkload.open(addresses, token, seed)``."""

    def __init__(self, client: KVClient, seed: int, *, writers: int, op_timeout_s: float):
        self.client = client
        self.seed = seed
        self.writers = writers
        self.op_timeout_s = op_timeout_s
        self.history = History()
        self.keys: list[str] = []
        self._rng = random.Random(seed)

    @classmethod
    async def open(
        cls,
        addresses: list[str],
        token: str,
        seed: int,
        *,
        writers: int = 3,
        op_timeout_s: float = 3.0,
    ) -> KvWorkload:
        client = await connect(addresses, token=token, timeout_s=op_timeout_s)
        return cls(client, seed, writers=writers, op_timeout_s=op_timeout_s)

    async def run(self, done: asyncio.Event) -> None:
        await asyncio.gather(
            *(self._writer(n, done) for n in range(self.writers)), self._reader(done)
        )

    async def _writer(self, number: int, done: asyncio.Event) -> None:
        sequence = 0
        while not done.is_set():
            key = f"s{self.seed}-w{number}-{sequence}"
            sequence += 1
            self.keys.append(key)
            put = self.client.put(key, key.encode(), timeout_s=self.op_timeout_s)
            if await self.history.call(number, "write", key, key.encode(), put) is None:
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def _reader(self, done: asyncio.Event) -> None:
        while not done.is_set():
            if not self.keys:
                await asyncio.sleep(0.01)
                continue
            key = self._rng.choice(self.keys)
            await self.history.call(self.writers, "read", key, None, self._read(key), read=True)

    async def _read(self, key: str) -> bytes | None:
        return (await self.client.get(key, timeout_s=self.op_timeout_s)).value

    async def verify(self) -> Verdict:
        def final_read(key: str) -> Callable[[], Awaitable[bytes | None]]:
            return lambda: retrying(lambda: self._read(key))

        values = await gather_bounded([final_read(key) for key in self.keys])
        report = check_register_histories(pair_operations(self.history))
        problems = [] if report.valid is not False else [f"not linearizable: {report.describe()}"]
        return judge(self.history, [v for v in values if v is not None], problems)

    async def close(self) -> None:
        await self.client.close()
