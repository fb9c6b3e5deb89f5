"""Worker-id leases on a real three-master Redis Cluster: a worker id's three keys share one
hash slot (``{w<id>}``), so each script runs on one master, while different worker ids
spread over the masters. Exactly one holder per id, an expired holder fenced, and the sequencer
contract, as on a single server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import settings

from blocks.core.errors import Conflict, Unavailable
from blocks.sequencer.api import IdGenerator
from blocks.sequencer.contract import SequencerContract
from blocks.testing.engines import redis_missing

REDIS_MISSING = redis_missing()
if REDIS_MISSING is not None:
    pytest.skip(REDIS_MISSING, allow_module_level=True)

from blocks.sequencer.adapters import redis as redis_sequencer  # noqa: E402
from blocks.testing.redis_cluster import RedisClusterProcesses  # noqa: E402

RedisLeaseConfig = redis_sequencer.RedisLeaseConfig
RedisLeases = redis_sequencer.RedisLeases
RedisSnowflake = redis_sequencer.RedisSnowflake

CONTENDERS = 8
JOIN_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster-leases")) as cluster:
        yield cluster


def namespace() -> str:
    return f"c{uuid.uuid4().hex[:10]}:"


def test_racing_contenders_leave_exactly_one_holder_per_worker_id(
    redis_cluster: RedisClusterProcesses,
) -> None:
    config = RedisLeaseConfig(workers=3, ttl_ms=60_000, namespace=namespace())
    barrier = threading.Barrier(CONTENDERS)
    won: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def contend(owner: str) -> None:
        leases = RedisLeases.open(redis_cluster.url, config, cluster=True)
        try:
            barrier.wait(JOIN_TIMEOUT_S)
            lease = leases.try_acquire(owner)
            if lease is not None:
                with lock:
                    won.append(lease)
        except BaseException as error:  # reported by the test thread
            errors.append(error)
        finally:
            leases.close()

    threads = [threading.Thread(target=contend, args=(f"o-{i}",)) for i in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not errors, errors
    assert sorted(lease.worker_id for lease in won) == [0, 1, 2]


def test_an_expired_holder_is_fenced(redis_cluster: RedisClusterProcesses) -> None:
    name = namespace()
    short = RedisLeaseConfig(workers=1, ttl_ms=300, safety_margin_ms=100, namespace=name)
    holder = RedisSnowflake.open(redis_cluster.url, "stalled", short, cluster=True)
    old_ids = holder.next_ids(5)
    old_lease = holder.lease
    long = RedisLeaseConfig(workers=1, ttl_ms=60_000, namespace=name)
    successor = RedisSnowflake.open(
        redis_cluster.url, "successor", long, cluster=True, acquire_timeout_s=60.0
    )
    assert successor.lease.fence > old_lease.fence
    assert not old_lease.held()
    leases = RedisLeases.open(redis_cluster.url, short, cluster=True)
    with pytest.raises(Conflict):
        leases.renew(old_lease)
    with pytest.raises(Unavailable):
        holder.next_id()
    assert min(successor.next_ids(5)) > max(old_ids)
    leases.close()
    holder.close()
    successor.close()


class RedisClusterSnowflakeContract(SequencerContract):
    declared_properties = redis_sequencer.PROPERTIES
    url: ClassVar[str | None] = None

    def make_subject(self) -> IdGenerator[Any]:
        assert self.url is not None
        config = RedisLeaseConfig(
            workers=4, ttl_ms=120_000, safety_margin_ms=5_000, namespace=namespace()
        )
        generator: IdGenerator[Any] = RedisSnowflake.open(
            self.url, "contract", config, cluster=True, clock=self.clock, sleep=self.sleep
        )
        return generator


@pytest.fixture(autouse=True)
def _cluster_url(redis_cluster: RedisClusterProcesses) -> None:
    RedisClusterSnowflakeContract.url = redis_cluster.url


TestRedisClusterSnowflakeContract = RedisClusterSnowflakeContract.TestCase
TestRedisClusterSnowflakeContract.settings = settings(
    settings.default, max_examples=10, stateful_step_count=30, deadline=None
)
