"""Keys in raw data-path frames are checked exactly as the Python and gRPC APIs check them.

The kv contract (``blocks.kv.api``) makes a key any bytes or str of at most 64 KiB, the empty
key included: ``Bitcask``, ``KVClient`` and the gRPC service all accept ``b""``, and so does a
raw ``put`` frame, with the same result. What the APIs refuse, a raw frame gets refused with
the same ``InvalidArgument``, and nothing changes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from blocks.core.errors import InvalidArgument
from blocks.kv.limits import KEY_BYTES_MAX
from blocks.kv.local_cluster import LocalCluster


def _put(key: Any) -> list[Any]:
    return ["put", key, b"raw", None, None, None, 0]


async def _raw_and_api(bad_keys: list[Any]) -> None:
    async with LocalCluster(nodes=1, replicas=1, read_quorum=1, write_quorum=1) as cluster:
        raw = cluster.network.transport("raw-client")
        client = cluster.client()
        await raw.request("n1", _put(b""))  # the empty key is a key, as in the API
        assert (await client.get(b"")).value == b"raw"
        await client.put("", b"api")  # str "" is the same key
        assert (await raw.request("n1", ["get", b"", None, None])) is not None
        assert (await client.get(b"")).value == b"api"
        for key in bad_keys:
            with pytest.raises(InvalidArgument):
                await raw.request("n1", _put(key))
            with pytest.raises(InvalidArgument):
                await raw.request("n1", ["get", key, None, None])
            with pytest.raises(InvalidArgument):
                await client.put(key, b"api")
        assert cluster.node("n1").core.objects.keys() == {b""}


def test_raw_frames_and_the_api_agree_on_keys() -> None:
    bad_keys: list[Any] = [None, 7, ["k"], b"k" * (KEY_BYTES_MAX + 1), "\ud800"]
    asyncio.run(_raw_and_api(bad_keys))
