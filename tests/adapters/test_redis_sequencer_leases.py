"""Worker-id leases on a real ``redis-server``: exactly one holder per worker id, even when
contenders race; an expired holder is fenced (its renewal is refused, its generator stops,
its fence is below the new holder's, and the new holder's IDs are above its IDs)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import Conflict, InvalidArgument, Unavailable
from blocks.sequencer.snowflake import decode
from blocks.testing.engines import RedisServer

redis_sequencer = pytest.importorskip("blocks.sequencer.adapters.redis", reason="no redis")
RedisLeaseConfig = redis_sequencer.RedisLeaseConfig
RedisLeases = redis_sequencer.RedisLeases
RedisSnowflake = redis_sequencer.RedisSnowflake

CONTENDERS = 8
JOIN_TIMEOUT_S = 60.0
TAKEOVER_TIMEOUT_S = 60.0


@pytest.fixture
def namespace(redis_server: RedisServer) -> Iterator[str]:
    import redis

    name = f"l{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.Redis.from_url(redis_server.url)
    for key in list(client.scan_iter(match=f"{name}*")):
        client.delete(key)
    client.close()


def race(url: str, config: object, owners: list[str]) -> list[object]:
    """Every owner tries once to lease, all released by one barrier; the leases won."""
    barrier = threading.Barrier(len(owners))
    won: list[object] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def contend(owner: str) -> None:
        leases = RedisLeases.open(url, config)
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

    threads = [threading.Thread(target=contend, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not errors, errors
    return won


@pytest.mark.parametrize("workers", [1, 3])
def test_racing_contenders_leave_exactly_one_holder_per_worker_id(
    redis_server: RedisServer, namespace: str, workers: int
) -> None:
    config = RedisLeaseConfig(workers=workers, ttl_ms=60_000, namespace=namespace)
    owners = [f"owner-{i}" for i in range(CONTENDERS)]
    won = race(redis_server.url, config, owners)
    assert len(won) == workers
    assert sorted(lease.worker_id for lease in won) == list(range(workers))  # type: ignore[attr-defined]
    # Everything is leased: nobody else gets in until a holder lets go.
    assert race(redis_server.url, config, ["late-1", "late-2"]) == []


def test_two_generators_never_hold_the_same_worker_id(
    redis_server: RedisServer, namespace: str
) -> None:
    config = RedisLeaseConfig(workers=2, ttl_ms=60_000, namespace=namespace)
    first = RedisSnowflake.open(redis_server.url, "first", config)
    second = RedisSnowflake.open(redis_server.url, "second", config)
    assert {first.worker_id, second.worker_id} == {0, 1}
    with pytest.raises(Unavailable):
        RedisSnowflake.open(redis_server.url, "third", config)
    ids_first = first.next_ids(100)
    assert {decode(i).worker_id for i in ids_first} == {first.worker_id}
    assert not set(ids_first) & set(second.next_ids(100))
    freed = first.worker_id
    first.close()
    third = RedisSnowflake.open(redis_server.url, "third", config)
    assert third.worker_id == freed  # released at once, not after the TTL
    assert min(third.next_ids(10)) > max(ids_first)  # started above the release bound
    second.close()
    third.close()


def test_an_expired_holder_is_fenced(redis_server: RedisServer, namespace: str) -> None:
    short = RedisLeaseConfig(workers=1, ttl_ms=300, safety_margin_ms=100, namespace=namespace)
    holder = RedisSnowflake.open(redis_server.url, "stalled", short)
    old_ids = holder.next_ids(5)
    old_lease = holder.lease
    # The holder stalls (no call renews its lease); a contender waits for the key to expire.
    long = RedisLeaseConfig(workers=1, ttl_ms=60_000, namespace=namespace)
    successor = RedisSnowflake.open(
        redis_server.url, "successor", long, acquire_timeout_s=TAKEOVER_TIMEOUT_S
    )
    assert successor.worker_id == old_lease.worker_id == 0
    assert successor.lease.fence > old_lease.fence
    # The old holder's own clock had already told it to stop (validity < TTL, counted from
    # before it asked), and Redis refuses its renewal: it is fenced.
    assert not old_lease.held()
    leases = RedisLeases.open(redis_server.url, short)
    with pytest.raises(Conflict):
        leases.renew(old_lease)
    assert not leases.release(old_lease)  # cannot free the successor's lease either
    assert leases.current_fence(0) == successor.lease.fence
    with pytest.raises(Unavailable):
        holder.next_id()  # no worker id to lease again: it refuses rather than repeat one
    new_ids = successor.next_ids(5)
    assert min(new_ids) > max(old_ids)  # same worker id, later milliseconds
    leases.close()
    holder.close()
    successor.close()


def test_a_lost_lease_is_taken_again_and_ids_keep_increasing(
    redis_server: RedisServer, namespace: str
) -> None:
    config = RedisLeaseConfig(workers=2, ttl_ms=60_000, namespace=namespace)
    generator = RedisSnowflake.open(redis_server.url, "g", config)
    before = generator.next_ids(3)
    leases = RedisLeases.open(redis_server.url, config)
    assert leases.release(generator.lease)  # taken away behind the generator's back
    after = generator.next_ids(3)
    assert min(after) > max(before)
    leases.close()
    generator.close()


def test_acquire_gives_up_even_on_a_clock_that_never_moves(
    redis_server: RedisServer, namespace: str
) -> None:
    config = RedisLeaseConfig(workers=1, ttl_ms=60_000, namespace=namespace)
    leases = RedisLeases(
        RedisLeases.open(redis_server.url, config)._client,
        config,
        clock=ManualClock(),
        sleep=lambda _seconds: None,
    )
    assert leases.acquire("a", timeout_s=1.0).worker_id == 0
    with pytest.raises(Unavailable):
        leases.acquire("b", timeout_s=1.0)
    leases.close()


def test_bad_configuration_and_owner_are_refused() -> None:
    for bad in (
        {"workers": 0},
        {"ttl_ms": 100, "safety_margin_ms": 50},
        {"namespace": "a*"},
        {"probe_max": 0},
    ):
        with pytest.raises(InvalidArgument):
            RedisLeaseConfig(**bad)  # type: ignore[arg-type]


def test_an_empty_owner_is_refused(redis_server: RedisServer, namespace: str) -> None:
    leases = RedisLeases.open(redis_server.url, RedisLeaseConfig(namespace=namespace))
    with pytest.raises(InvalidArgument):
        leases.try_acquire("")
    leases.close()


def test_a_busy_generator_keeps_its_grant_by_renewing_in_line(
    redis_server: RedisServer, namespace: str
) -> None:
    clock = ManualClock(wall_ms=1_800_000_000_000)
    config = RedisLeaseConfig(workers=1, ttl_ms=60_000, safety_margin_ms=5_000, namespace=namespace)
    generator = RedisSnowflake.open(redis_server.url, "busy", config, clock=clock)
    fence = generator.lease.fence
    issued = [generator.next_id()]
    for _ in range(6):  # 180 s on the holder's clock: three TTLs, renewed every call
        clock.advance(30.0)
        issued.append(generator.next_id())
        assert generator.lease.held()
    assert generator.lease.fence == fence  # the same grant throughout, never leased again
    assert issued == sorted(set(issued))
    leases = RedisLeases.open(redis_server.url, config)
    assert leases.current_fence(0) == fence
    leases.close()
    generator.close()


def test_a_holder_rides_out_a_redis_restart_within_its_validity(tmp_path: Path) -> None:
    clock = ManualClock(wall_ms=1_800_000_000_000)
    config = RedisLeaseConfig(workers=1, ttl_ms=60_000, safety_margin_ms=5_000)
    with RedisServer(tmp_path / "redis") as server:
        generator = RedisSnowflake.open(server.url, "rider", config, clock=clock)
        fence = generator.lease.fence
        issued = [generator.next_id()]
        server.stop()
        clock.advance(30.0)  # time to renew, and Redis is down: still valid, so it issues
        issued.append(generator.next_id())
        clock.advance(30.0)  # past ttl - margin on the holder's clock: it must stop
        with pytest.raises(Unavailable):
            generator.next_id()
        server.start()  # the lease key was fsynced; its expiry is on the server's clock
        issued.append(generator.next_id())  # renewed (scripts loaded again), same grant
        assert generator.lease.fence == fence
        assert issued == sorted(set(issued))
        generator.close()
