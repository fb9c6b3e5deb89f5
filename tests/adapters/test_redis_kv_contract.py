"""The kv contract against ``RedisKeyValueStore`` on a real ``redis-server``: every property
the adapter claims (all of them). Each example gets its own namespace, emptied at the end of
the example; ``restart_subject`` closes the adapter, restarts the redis-server (same port,
append-only file fsynced per write) and opens a new adapter: every key must be there."""

from __future__ import annotations

import time
import uuid
from typing import ClassVar

import pytest
from hypothesis import settings

from blocks.core.errors import Unavailable
from blocks.kv.api import KeyValueStore
from blocks.kv.contract import KeyValueStoreContract
from blocks.testing.engines import RedisServer

redis_kv = pytest.importorskip("blocks.kv.adapters.redis", reason="redis not installed")

RECOVERY_DEADLINE_S = 30.0
VALUE_BYTES_MAX = 4_096


class RedisKvContract(KeyValueStoreContract):
    declared_properties = redis_kv.PROPERTIES
    value_bytes_max = VALUE_BYTES_MAX
    server: ClassVar[RedisServer | None] = None

    def __init__(self) -> None:
        self.namespace = f"t{uuid.uuid4().hex[:10]}:"
        super().__init__()

    def _open(self) -> KeyValueStore:
        assert self.server is not None
        store: KeyValueStore = redis_kv.RedisKeyValueStore.open(
            self.server.url, namespace=self.namespace, value_bytes_max=VALUE_BYTES_MAX
        )
        return store

    def make_subject(self) -> KeyValueStore:
        return self._open()

    def restart_subject(self, store: KeyValueStore) -> KeyValueStore | None:
        store.close()
        assert self.server is not None
        self.server.restart()
        reopened = self._open()
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while True:  # the port opens before the append-only file is loaded
            try:
                len(reopened)
                return reopened
            except Unavailable:
                assert time.monotonic() < deadline, "redis did not come back"
                time.sleep(0.05)

    def close_subject(self, subject: KeyValueStore) -> None:
        for key in list(subject.keys()):
            subject.delete(key)
        subject.close()


@pytest.fixture(autouse=True)
def _redis_server(redis_server: RedisServer) -> None:
    RedisKvContract.server = redis_server


def test_redis_claims_every_kv_property() -> None:
    assert RedisKvContract.skipped_properties() == ()


TestRedisKvContract = RedisKvContract.TestCase
TestRedisKvContract.settings = settings(
    settings.default, max_examples=20, stateful_step_count=25, deadline=None
)
