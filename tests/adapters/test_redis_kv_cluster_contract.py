"""The kv contract against ``RedisKeyValueStore`` on a real three-master Redis Cluster
(``blocks.testing.redis_cluster``): every property the adapter claims there, which is all
but ``restart`` (a restart of every node is not run here, and the rule is skipped by name).
Keys of one example spread over the three masters; ``put_many`` is one script per slot."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest
from hypothesis import settings

from blocks.kv.api import KeyValueStore
from blocks.kv.contract import KeyValueStoreContract
from blocks.testing.engines import redis_missing

REDIS_MISSING = redis_missing()
if REDIS_MISSING is not None:
    pytest.skip(REDIS_MISSING, allow_module_level=True)

from blocks.kv.adapters import redis as redis_kv  # noqa: E402
from blocks.testing.redis_cluster import RedisClusterProcesses  # noqa: E402

VALUE_BYTES_MAX = 4_096


class RedisClusterKvContract(KeyValueStoreContract):
    declared_properties = redis_kv.CLUSTER_PROPERTIES
    value_bytes_max = VALUE_BYTES_MAX
    url: ClassVar[str | None] = None

    def make_subject(self) -> KeyValueStore:
        assert self.url is not None
        store: KeyValueStore = redis_kv.RedisKeyValueStore.open(
            self.url,
            namespace=f"t{uuid.uuid4().hex[:10]}:",
            cluster=True,
            value_bytes_max=VALUE_BYTES_MAX,
        )
        return store

    def close_subject(self, subject: KeyValueStore) -> None:
        for key in list(subject.keys()):
            subject.delete(key)
        subject.close()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _cluster_url(redis_cluster: RedisClusterProcesses) -> None:
    RedisClusterKvContract.url = redis_cluster.url


def test_the_cluster_skips_only_restart() -> None:
    assert RedisClusterKvContract.skipped_properties() == ("restart",)


def test_keys_spread_over_every_master_and_scan_finds_them_all(
    redis_cluster: RedisClusterProcesses,
) -> None:
    store = redis_kv.RedisKeyValueStore.open(redis_cluster.url, namespace="spread:", cluster=True)
    keys = [b"key-%d" % i for i in range(60)]
    store.put_many([(key, key) for key in keys])
    import redis

    per_node = []
    for node in redis_cluster.nodes:
        client = redis.Redis(host="127.0.0.1", port=node.port)
        per_node.append(len(list(client.scan_iter(match="spread:*"))))
        client.close()
    assert all(count > 0 for count in per_node), per_node
    assert sum(per_node) == len(store) == len(keys)
    assert sorted(store.keys()) == sorted(keys)
    assert store.get_many(keys) == keys
    for key in keys:
        store.delete(key)
    store.close()


TestRedisClusterKvContract = RedisClusterKvContract.TestCase
TestRedisClusterKvContract.settings = settings(
    settings.default, max_examples=20, stateful_step_count=25, deadline=None
)


def test_an_unreachable_cluster_is_unavailable() -> None:
    from blocks.core.errors import Unavailable
    from blocks.testing.ports import free_ports

    nobody = free_ports(1)[0]  # nothing listens there
    with pytest.raises(Unavailable):
        redis_kv.RedisKeyValueStore.open(f"redis://127.0.0.1:{nobody}", cluster=True)
