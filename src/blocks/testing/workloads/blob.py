"""blob workload: one writer per node PUTs unique objects (a few shard chunks each) through
that node's S3 endpoint and GETs some back; the final state is every object read from the node
that took its PUT (with per-node metadata only that node knows it; a cluster's replicated
metadata lets any node serve it).

An acknowledged PUT must read back byte-identical; a GET must never return bytes that no PUT
sent. The S3 client is synchronous, so each writer runs it in a worker thread."""

from __future__ import annotations

import asyncio
import functools
import hashlib

from blocks.blob.client import S3Client, S3ClientError
from blocks.testing.history import History, OpType
from blocks.testing.servers import BLOB_ACCESS_KEY, BLOB_SECRET_KEY
from blocks.testing.workloads.base import ERROR_BACKOFF_S, Verdict, judge, retrying

__all__ = ["BlobWorkload", "object_bytes"]

OBJECT_BYTES_MAX = 160 * 1024


def object_bytes(key: str, size: int) -> bytes:
    """The content PUT under ``key``: a function of the key, so a read can be checked."""
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


async def _create_bucket(client: S3Client, bucket: str) -> None:
    """Create ``bucket`` through ``client``'s node; one that already has it (a cluster's
    metadata is replicated, or an earlier try got through) is fine."""
    try:
        await asyncio.to_thread(client.create_bucket, bucket)
    except S3ClientError as error:
        if error.code != "BucketAlreadyOwnedByYou":
            raise


class BlobWorkload:
    """Build with ``await BlobWorkload.open(endpoints, seed)`` (nodes' ``host:port``)."""

    def __init__(self, endpoints: list[str], seed: int, *, op_timeout_s: float = 10.0):
        self.endpoints = endpoints
        self.seed = seed
        self.op_timeout_s = op_timeout_s
        self.bucket = f"nemesis-{seed}"
        self.history = History()
        self.written: list[tuple[int, str]] = []  # (node index, key) of every PUT invoked

    def _client(self, node: int) -> S3Client:
        return S3Client(
            f"http://{self.endpoints[node]}", BLOB_ACCESS_KEY, BLOB_SECRET_KEY, self.op_timeout_s
        )

    @classmethod
    async def open(cls, endpoints: list[str], seed: int) -> BlobWorkload:
        """A workload with its bucket created on every node."""
        workload = cls(endpoints, seed)
        for node in range(len(endpoints)):
            client = workload._client(node)
            try:
                create = functools.partial(_create_bucket, client, workload.bucket)
                await retrying(create)
            finally:
                client.close()
        return workload

    async def run(self, done: asyncio.Event) -> None:
        await asyncio.gather(*(self._writer(n, done) for n in range(len(self.endpoints))))

    async def _writer(self, node: int, done: asyncio.Event) -> None:
        client = self._client(node)
        sequence = 0
        try:
            while not done.is_set():
                key = f"n{node}/o{sequence}"
                size = 1 + (sequence * 37_813) % OBJECT_BYTES_MAX
                sequence += 1
                self.written.append((node, key))
                data = object_bytes(key, size)
                put = asyncio.to_thread(client.put_object, self.bucket, key, data)
                if await self.history.call(node, "write", key, key, put) is None:
                    await asyncio.sleep(ERROR_BACKOFF_S)
        finally:
            client.close()

    async def _get(self, node: int, key: str) -> str:
        """The key the bytes belong to: ``key`` when byte-identical, else a marker."""
        client = self._client(node)
        try:
            data = await asyncio.to_thread(client.get_object, self.bucket, key)
        finally:
            client.close()
        if data == object_bytes(key, len(data)):
            return key
        return f"corrupt:{key}:{len(data)}"

    async def verify(self) -> Verdict:
        acknowledged = {op.key for op in self.history.completions(OpType.OK, "write")}
        final: list[object] = []
        for node, key in self.written:
            try:
                got = await self._get(node, key) if key in acknowledged else None
            except Exception as error:  # counted as lost below, with the reason
                self.history.add(-1, OpType.INFO, "final-read", key, None, repr(error))
                continue
            if got is not None:
                final.append(got)
        return judge(self.history, final)

    async def close(self) -> None:
        return None
