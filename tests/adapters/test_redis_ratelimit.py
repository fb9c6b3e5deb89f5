"""``RedisTokenBucket`` and ``RedisGCRA`` beyond the contract, on a real redis-server: the
same decisions as the in-process limiters, the server's clock against injected ones, key
expiry, bad input and a stopped server."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, Unavailable
from blocks.ratelimit.api import RateLimiter
from blocks.ratelimit.bucket import GCRA, TokenBucket
from blocks.ratelimit.distributed import MemoryWindowStore
from blocks.testing.engines import RedisServer

redis_adapter = pytest.importorskip("blocks.ratelimit.adapters.redis", reason="redis not installed")
RedisGCRA = redis_adapter.RedisGCRA
RedisTokenBucket = redis_adapter.RedisTokenBucket
REFUSAL_ATTEMPTS_MAX = 1_000


def _namespace() -> str:
    return f"r{uuid.uuid4().hex[:10]}:"


@pytest.mark.parametrize(("remote", "local"), [(RedisGCRA, GCRA), (RedisTokenBucket, TokenBucket)])
def test_decisions_equal_the_in_process_limiters(
    redis_server: RedisServer, remote: Any, local: Any
) -> None:
    clock = ManualClock(monotonic_s=500.0)
    ours = local(4.5, 7, clock=clock)
    theirs = remote.open(redis_server.url, 4.5, 7, namespace=_namespace(), clock=clock)
    rng = random.Random(3)
    for _ in range(400):
        clock.advance(ms=rng.choice([0, 0, 1, 37, 150, 999, 2500]))
        key, cost = rng.choice("abc"), rng.randint(1, 7)
        assert theirs.acquire(key, cost) == ours.acquire(key, cost)
    theirs.close()


@pytest.mark.parametrize("limiter_class", [RedisGCRA, RedisTokenBucket])
def test_on_the_servers_clock_the_promise_holds_and_retry_after_is_honest(
    redis_server: RedisServer, limiter_class: Any
) -> None:
    rate, burst = 2.0, 3
    limiter = limiter_class.open(redis_server.url, rate, burst, namespace=_namespace())
    started = time.monotonic()
    admitted = 0
    for _ in range(REFUSAL_ATTEMPTS_MAX):
        decision = limiter.acquire("k")
        if not decision.allowed:
            break
        admitted += 1
    elapsed_s = time.monotonic() - started
    assert not decision.allowed, "never refused"
    # Whatever the machine's load made the elapsed time, the promise bounds the admissions.
    assert burst <= admitted <= burst + rate * elapsed_s + 1e-6
    assert 0 < decision.retry_after_ms <= 1000 / rate
    time.sleep(decision.retry_after_ms / 1000)
    assert limiter.acquire("k").allowed  # waiting retry_after_ms on our clock is enough
    limiter.close()


def test_injected_clocks_that_disagree_overadmit_the_servers_clock_does_not(
    redis_server: RedisServer,
) -> None:
    namespace = _namespace()
    early, late = ManualClock(monotonic_s=100.0), ManualClock(monotonic_s=160.0)
    first = RedisGCRA.open(redis_server.url, 1, 5, namespace=namespace, clock=early)
    second = RedisGCRA.open(redis_server.url, 1, 5, namespace=namespace, clock=late)
    assert first.acquire("k", 5).allowed
    # The second client's clock is a minute ahead: to it the key is long back at full.
    assert second.acquire("k", 5).allowed  # 10 admitted at once where the promise is 5
    namespace = _namespace()
    first = RedisGCRA.open(redis_server.url, 1, 5, namespace=namespace)
    second = RedisGCRA.open(redis_server.url, 1, 5, namespace=namespace)
    assert first.acquire("k", 5).allowed
    assert not second.acquire("k", 5).allowed  # one clock, the server's: one burst
    for limiter in (first, second):
        limiter.close()


@pytest.mark.parametrize(
    ("limiter_class", "kind"), [(RedisGCRA, "gcra"), (RedisTokenBucket, "bucket")]
)
def test_a_key_expires_when_back_at_full_allowance(
    redis_server: RedisServer, limiter_class: Any, kind: str
) -> None:
    namespace = _namespace()
    limiter = limiter_class.open(redis_server.url, 0.1, 20, namespace=namespace)
    decision = limiter.acquire("k", 15)
    ttl_ms = limiter._client.pttl(f"{namespace}{kind}:k")
    assert 0 < ttl_ms <= decision.reset_ms + 2
    assert limiter._client.exists(f"{namespace}{kind}:never") == 0
    assert not limiter.acquire("k", 20).allowed  # a refusal writes nothing
    assert limiter._client.pttl(f"{namespace}{kind}:k") <= ttl_ms
    limiter.close()


def test_bad_input_is_refused_before_the_server(redis_server: RedisServer) -> None:
    limiter = RedisGCRA.open(redis_server.url, 1, 3, namespace=_namespace())
    for key, cost in (("", 1), ("x" * 300, 1), (5, 1), ("k", 0), ("k", 4), ("k", True)):
        with pytest.raises(InvalidArgument):
            limiter.acquire(key, cost)
    for rate, burst in ((0, 1), (1, 0), (1, 1.5), (float("nan"), 1)):
        with pytest.raises(InvalidArgument):
            RedisTokenBucket(limiter._client, rate, burst)
    assert limiter.acquire("k", 3).allowed
    assert isinstance(limiter, RateLimiter) and limiter.capacity == 3
    limiter.close()


def test_a_stopped_server_is_unavailable_and_state_survives(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        clock = ManualClock(monotonic_s=10.0)
        limiter = RedisGCRA.open(server.url, 1, 3, clock=clock, timeout_s=5.0)
        assert limiter.acquire("k", 3).allowed
        server.stop()
        with pytest.raises(Unavailable):
            limiter.acquire("k")
        server.start()  # the script cache is empty now: it is loaded again
        refused = limiter.acquire("k")
        assert not refused.allowed and refused.retry_after_ms == 1000
        limiter.close()


def test_window_store_adds_as_the_memory_store_does(redis_server: RedisServer) -> None:
    store = redis_adapter.RedisWindowStore.open(redis_server.url, namespace=_namespace())
    memory = MemoryWindowStore()
    rng = random.Random(11)
    window = 1_000
    for _ in range(500):
        window += rng.choice([0, 0, 0, 1, 2, -1, -2])
        key, delta = rng.choice("ab"), rng.randint(-3, 5)
        assert store.add(key, window, delta) == memory.add(key, window, delta)
    ttl_ms = store._client.pttl(f"{store._namespace}window:a")
    assert 0 < ttl_ms <= redis_adapter.ENTRY_TTL_MS
    for key, window, delta in (("", 1, 1), ("k", 1.5, 1), ("k", 1, 1 << 60), ("k", True, 1)):
        with pytest.raises(InvalidArgument):
            store.add(key, window, delta)
    store.close()


@pytest.mark.parametrize("limiter_class", [RedisGCRA, RedisTokenBucket])
def test_clients_racing_on_one_key_share_one_limit(
    redis_server: RedisServer, limiter_class: Any
) -> None:
    rate, burst, clients, attempts = 5.0, 10, 4, 60
    namespace = _namespace()
    limiters = [
        limiter_class.open(redis_server.url, rate, burst, namespace=namespace)
        for _ in range(clients)
    ]
    admitted = [0] * clients
    start = threading.Barrier(clients)

    def hammer(index: int) -> None:
        start.wait(30)
        for _ in range(attempts):
            admitted[index] += limiters[index].acquire("shared").allowed

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed_s = time.monotonic() - started
    # One script per decision: the clients together stay within one limit.
    assert burst <= sum(admitted) <= burst + rate * elapsed_s + 1e-6
    for limiter in limiters:
        limiter.close()
