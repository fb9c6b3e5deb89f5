"""The one contract shape: the same hooks on every block's contract, sync or async, with the
old hook names still working (and warned about), and a documented rule that really bites."""

from __future__ import annotations

import shutil
import sys
import tempfile
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import rule, run_state_machine_as_test

from blocks.blob.contract import BlobStoreContract
from blocks.cache.contract import CacheContract
from blocks.core.errors import InvalidArgument, NotFound
from blocks.counters.contract import CountersContract
from blocks.inference.contract import EngineContract
from blocks.kv import Bitcask, KeyValueStore
from blocks.kv.contract import KeyValueStoreContract
from blocks.pubsub.contract import PubSubContract
from blocks.queue.api import Message, Queue
from blocks.queue.contract import QueueContract
from blocks.queue.local import LocalQueue
from blocks.ratelimit.contract import RateLimiterContract
from blocks.search import ExactIndex
from blocks.search.contract import vector_index_contract
from blocks.sequencer.contract import SequencerContract
from blocks.testing.contract import Contract

QUICK = settings(
    max_examples=5,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
CONTRACTS: list[type[Contract[Any]]] = [
    BlobStoreContract,
    CacheContract,
    CountersContract,
    EngineContract,
    KeyValueStoreContract,
    PubSubContract,
    QueueContract,
    RateLimiterContract,
    SequencerContract,
    vector_index_contract(lambda dim, metric: ExactIndex(dim, metric)),
]


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.__name__)
def test_every_contract_has_the_same_base_and_hooks(contract: type[Contract[Any]]) -> None:
    assert issubclass(contract, Contract)
    for hook in ("make_subject", "restart_subject", "close_subject"):
        assert callable(getattr(contract, hook))
    assert contract.properties, "a contract names the properties it checks"
    module_doc = sys.modules[contract.__module__].__doc__ or ""
    assert "make_subject" in module_doc, "the docstring teaches the shared hook"


class _BitcaskMixin:
    directory: str

    def _open(self) -> Bitcask:
        return Bitcask.open(self.directory, sync="never")

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[misc]
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class NewStyleKv(_BitcaskMixin, KeyValueStoreContract):
    def make_subject(self) -> KeyValueStore:
        self.directory = tempfile.mkdtemp(prefix="contract-shape-")
        return self._open()

    def restart_subject(self, store: KeyValueStore) -> KeyValueStore | None:
        store.close()
        return self._open()


def test_the_new_hooks_run_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        run_state_machine_as_test(NewStyleKv, settings=QUICK)


def test_old_hook_names_still_work_but_warn() -> None:
    with pytest.warns(DeprecationWarning) as caught:

        class OldStyleKv(_BitcaskMixin, KeyValueStoreContract):
            def make_store(self) -> KeyValueStore:
                self.directory = tempfile.mkdtemp(prefix="contract-shape-")
                return self._open()

            def reopen_store(self, store: KeyValueStore) -> KeyValueStore | None:
                store.close()
                return self._open()

    assert sorted(str(w.message).split(" ")[0] for w in caught) == [
        "OldStyleKv.make_store",
        "OldStyleKv.reopen_store",
    ]
    reopened: list[bool] = []
    original = OldStyleKv.reopen_store

    def counting(self: OldStyleKv, store: KeyValueStore) -> KeyValueStore | None:
        reopened.append(True)
        return original(self, store)

    OldStyleKv.reopen_store = counting  # type: ignore[method-assign]
    run_state_machine_as_test(OldStyleKv, settings=settings(QUICK, max_examples=20))
    assert reopened, "the restart rule should have reached the old hook"


def test_a_contract_without_make_subject_says_which_hook_is_missing() -> None:
    with pytest.raises(NotImplementedError, match="make_subject"):
        KeyValueStoreContract()


class _OneRule(Contract[None]):
    properties = ("none",)

    def make_subject(self) -> None:
        return None

    @rule()
    def nothing(self) -> None:
        pass


def test_expect_passes_only_on_the_named_error() -> None:
    contract = _OneRule()

    async def fails(error: BaseException) -> None:
        raise error

    async def succeeds() -> None:
        return None

    try:
        contract.expect(fails(NotFound("x")), NotFound)
        with pytest.raises(AssertionError, match="expected NotFound"):
            contract.expect(succeeds(), NotFound)
        with pytest.raises(InvalidArgument):  # another error is not swallowed
            contract.expect(fails(InvalidArgument("y")), NotFound)
    finally:
        contract.finish_subject(None)


class _ReversingQueue(LocalQueue):
    """Breaks the documented FIFO rule on purpose: a multi-message receive comes back
    reversed."""

    async def receive(self, name: str, **options: Any) -> list[Message]:
        return list(reversed(await super().receive(name, **options)))


class BrokenFifoContract(QueueContract):
    async def make_subject(self) -> Queue:
        return _ReversingQueue(clock=self.clock)


class CorrectFifoContract(QueueContract):
    async def make_subject(self) -> Queue:
        return LocalQueue(clock=self.clock)


def test_the_queue_contract_catches_a_broken_fifo_rule() -> None:
    """Driven step by step rather than by a search, so the verdict cannot depend on which
    examples a search happens to draw (it once did, after other tests had run)."""
    machine = BrokenFifoContract()
    try:
        machine.build()
        for body in (b"first", b"second"):
            machine.send("plain", body, delay_ms=0, group=None, dedup_id=None, priority=0)
        with pytest.raises(AssertionError):
            machine.receive("plain", max_messages=2, visibility_ms=None)
    finally:
        machine.teardown()


def test_the_queue_contract_passes_the_same_steps_on_a_correct_queue() -> None:
    """The control for the test above: the same steps on the real ``LocalQueue`` pass."""
    machine = CorrectFifoContract()
    try:
        machine.build()
        for body in (b"first", b"second"):
            machine.send("plain", body, delay_ms=0, group=None, dedup_id=None, priority=0)
        received = machine.receive("plain", max_messages=2, visibility_ms=None)
        assert [message.body for _, message in received] == [b"first", b"second"]
    finally:
        machine.teardown()
