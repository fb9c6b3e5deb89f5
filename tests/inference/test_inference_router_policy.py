"""The router's pure policy: affinity, overload spill, least-loaded, health transitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument, Unavailable
from blocks.inference.router_policy import (
    DEFAULT_MAX_TOKENS,
    RouterConfig,
    RouterPolicy,
    prompt_prefix,
)
from blocks.inference.router_upstream import parse_backend_url

NAMES = ["a", "b", "c"]


def test_same_prefix_sticks_and_distinct_prefixes_spread() -> None:
    policy = RouterPolicy.of(NAMES)
    owners = {f"system prompt {i}": policy.choose(f"system prompt {i}").replica for i in range(30)}
    assert set(owners.values()) == set(NAMES)
    for prefix, owner in owners.items():
        assert all(policy.choose(prefix).replica == owner for _ in range(3))


def test_key_is_only_the_first_prefix_chars() -> None:
    policy = RouterPolicy.of(NAMES, RouterConfig(prefix_chars=8))
    owner = policy.choose("SYSTEM01 first question").replica
    assert all(policy.choose(f"SYSTEM01 question {i}").replica == owner for i in range(20))


def test_overloaded_owner_spills_to_least_loaded_and_comes_back() -> None:
    config = RouterConfig(overload_factor=2.0, overload_slack_tokens=100)
    policy = RouterPolicy.of(NAMES, config)
    owner = policy.choose("p").replica
    policy.start(owner, 100)  # at the limit (2 * 0 + 100): still the owner
    assert policy.choose("p").replica == owner
    policy.start(owner, 1)
    spill = policy.choose("p")
    assert spill.replica != owner and spill.reason.value == "overload"
    policy.finish(owner, 1)
    assert policy.choose("p").replica == owner
    assert policy.reasons["overload"] == 1


def test_affinity_off_picks_fewest_outstanding_tokens() -> None:
    policy = RouterPolicy.of(NAMES, RouterConfig(affinity=False))
    policy.start("a", 50)
    policy.start("b", 10)
    policy.start("c", 30)
    assert policy.choose("anything").replica == "b"
    policy.finish("b", 10)
    policy.start("b", 60)
    assert policy.choose("anything").replica == "c"


def test_failed_request_takes_a_replica_out_until_a_check_passes() -> None:
    policy = RouterPolicy.of(NAMES, RouterConfig(down_after_failures=2))
    owner = policy.choose("p").replica
    policy.handle_request_failure(owner)
    assert owner not in policy.up()
    moved = policy.choose("p").replica
    assert moved != owner
    policy.handle_health(owner, False)
    assert owner not in policy.up()
    policy.handle_health(owner, True)
    assert policy.choose("p").replica == owner


def test_health_checks_need_consecutive_failures() -> None:
    policy = RouterPolicy.of(NAMES, RouterConfig(down_after_failures=2))
    policy.handle_health("a", False)
    assert "a" in policy.up()
    policy.handle_health("a", True)
    policy.handle_health("a", False)
    assert "a" in policy.up()
    policy.handle_health("a", False)
    assert "a" not in policy.up()


def test_no_replica_left_raises_unavailable() -> None:
    policy = RouterPolicy.of(["a", "b"])
    with pytest.raises(Unavailable):
        policy.choose("p", exclude=["a", "b"])
    policy.handle_request_failure("a")
    assert policy.choose("p").replica == "b"
    with pytest.raises(Unavailable):
        policy.choose("p", exclude=["b"])


@given(
    st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 5000)), max_size=30),
    st.text(max_size=40),
)
def test_choice_is_up_and_never_beyond_the_overload_bound(
    loads: list[tuple[str, int]], prefix: str
) -> None:
    config = RouterConfig(overload_factor=1.5, overload_slack_tokens=64)
    policy = RouterPolicy.of(NAMES, config)
    for name, cost in loads:
        policy.start(name, cost)
    choice = policy.choose(prefix)
    loads_now = {n: r.outstanding_tokens for n, r in policy.replicas.items()}
    least = min(loads_now.values())
    assert loads_now[choice.replica] <= 1.5 * least + 64
    for name, cost in loads:
        policy.finish(name, cost)
    assert all(r.outstanding_tokens == 0 and r.in_flight == 0 for r in policy.replicas.values())


def test_prompt_prefix_of_chat_and_completion_bodies() -> None:
    system = {"role": "system", "content": "You are terse."}
    key1, cost1 = prompt_prefix({"messages": [system, {"role": "user", "content": "hi"}]})
    key2, _ = prompt_prefix({"messages": [system, {"role": "user", "content": "bye"}]})
    assert key1 == key2 == "system\nYou are terse.\n"  # the shared part only
    assert cost1 == len("system\nYou are terse.\nuser\nhi\n") // 4 + DEFAULT_MAX_TOKENS
    first = {"role": "user", "content": "Tell me about ships."}
    turn1, _ = prompt_prefix({"messages": [first]})
    turn3, _ = prompt_prefix({"messages": [first, {"role": "assistant", "content": "Ships"},
                                           {"role": "user", "content": "More"}]})  # fmt: skip
    assert turn1 == turn3  # a conversation's turns follow each other
    assert prompt_prefix({"prompt": "abcdefgh", "max_tokens": 10, "n": 2}) == ("abcdefgh", 24)
    assert prompt_prefix(["not", "a", "dict"]) == ("", DEFAULT_MAX_TOKENS)
    assert prompt_prefix({"prompt": "x", "max_tokens": True})[1] == DEFAULT_MAX_TOKENS


def test_config_and_url_validation() -> None:
    with pytest.raises(InvalidArgument):
        RouterConfig(overload_factor=0.5)
    with pytest.raises(InvalidArgument):
        RouterPolicy.of(["a", "a"])
    assert parse_backend_url("http://127.0.0.1:8000/v1") == ("127.0.0.1", 8000, "")
    assert parse_backend_url("localhost:9/api/v1/") == ("localhost", 9, "/api")
    with pytest.raises(InvalidArgument):
        parse_backend_url("https://x:1")
