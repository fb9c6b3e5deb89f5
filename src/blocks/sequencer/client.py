"""An async client for the sequencer service; errors arrive as ``blocks.core.errors`` classes."""

from __future__ import annotations

from typing import Any

from blocks.core.rpc import ChannelClient, mapped_errors
from blocks.sequencer import sequencer_pb2, sequencer_pb2_grpc
from blocks.sequencer.snowflake import DecodedId

__all__ = ["SequencerClient"]


class SequencerClient(ChannelClient):
    """``async with SequencerClient("127.0.0.1:7000") as client: await client.next_ids(10)``."""

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 10.0) -> None:
        super().__init__(address, token=token, timeout_s=timeout_s)
        self._stub: Any = sequencer_pb2_grpc.SequencerStub(self._channel)  # type: ignore[no-untyped-call]

    async def next_ids(self, count: int = 1) -> list[int]:
        with mapped_errors():
            reply = await self._stub.NextIds(
                sequencer_pb2.NextIdsRequest(count=count), timeout=self._timeout_s
            )
        return list(reply.ids)

    async def next_id(self) -> int:
        return (await self.next_ids(1))[0]

    async def decode(self, snowflake_id: int) -> DecodedId:
        with mapped_errors():
            reply = await self._stub.Decode(
                sequencer_pb2.DecodeRequest(id=snowflake_id), timeout=self._timeout_s
            )
        return DecodedId(reply.unix_ms, reply.worker_id, reply.sequence)

    async def allocate_tickets(self, count: int) -> range:
        with mapped_errors():
            reply = await self._stub.AllocateTickets(
                sequencer_pb2.AllocateTicketsRequest(count=count), timeout=self._timeout_s
            )
        return range(reply.start, reply.start + reply.count)
