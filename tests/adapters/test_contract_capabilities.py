"""The contract base's capability declaration: rules of an unclaimed property are skipped,
by name; claimed ones still run."""

from __future__ import annotations

import traceback

import pytest
from hypothesis import settings

from blocks.pubsub.api import Assignment, PubSub
from blocks.pubsub.contract import SESSION_TIMEOUT_MS, PubSubContract
from blocks.pubsub.local import LocalBroker


class _NoGroups(LocalBroker):
    """A broker whose group calls must never be made."""

    async def join_group(self, group: str, topic: str, member: str) -> Assignment:
        raise AssertionError("join_group called although 'group assignment' is not claimed")

    async def heartbeat(self, group: str, member: str) -> Assignment:
        raise AssertionError("heartbeat called although 'group assignment' is not claimed")

    async def leave_group(self, group: str, member: str) -> None:
        raise AssertionError("leave_group called although 'group assignment' is not claimed")


class NoGroupsContract(PubSubContract):
    declared_properties = frozenset(PubSubContract.properties) - {
        "group assignment",
        "fenced commits",
    }

    async def make_subject(self) -> PubSub:
        return _NoGroups(clock=self.clock, session_timeout_ms=SESSION_TIMEOUT_MS)


TestNoGroupsContract = NoGroupsContract.TestCase
TestNoGroupsContract.settings = settings(
    settings.default, max_examples=10, stateful_step_count=20, deadline=None
)


class AllClaimedContract(NoGroupsContract):
    declared_properties = None


def test_skipped_properties_are_named() -> None:
    assert NoGroupsContract.skipped_properties() == ("group assignment", "fenced commits")
    assert PubSubContract.skipped_properties() == ()


def test_supports_follows_the_declaration() -> None:
    contract = NoGroupsContract()
    assert contract.supports("restart")
    assert not contract.supports("group assignment")
    with pytest.raises(AssertionError, match="not a property"):
        contract.supports("no such property")


def test_a_claimed_property_runs_its_rules() -> None:
    """The same subject fails once the group rules are claimed: the skip is what passed."""
    case = AllClaimedContract.TestCase
    case.settings = settings(
        settings.default, max_examples=30, stateful_step_count=20, deadline=None, database=None
    )
    with pytest.raises(BaseException) as failure:  # Hypothesis may group the errors
        case("runTest").runTest()
    assert "not claimed" in "".join(traceback.format_exception(failure.value))
