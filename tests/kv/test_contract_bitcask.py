"""The public kv contract, run against Bitcask with tiny files, reopen and merge."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import settings

from blocks.kv import Bitcask, KeyValueStore
from blocks.kv.contract import KeyValueStoreContract

VALUE_BYTES_MAX = 4_096


class BitcaskContract(KeyValueStoreContract):
    value_bytes_max = VALUE_BYTES_MAX

    def make_subject(self) -> KeyValueStore:
        self.directory = tempfile.mkdtemp(prefix="bitcask-contract-")
        return self._open()

    def _open(self) -> Bitcask:
        # Tiny files so that rotation, multi-file recovery and multi-output merges happen.
        return Bitcask.open(
            self.directory, sync="never", value_bytes_max=VALUE_BYTES_MAX, file_bytes_max=512
        )

    def restart_subject(self, store: KeyValueStore) -> KeyValueStore | None:
        store.close()
        return self._open()

    def compact(self, store: KeyValueStore) -> None:
        assert isinstance(store, Bitcask)
        store.merge()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


BitcaskContract.TestCase.settings = settings(
    BitcaskContract.TestCase.settings, stateful_step_count=40
)
TestBitcaskContract = BitcaskContract.TestCase


class DurableBitcaskContract(BitcaskContract):
    """The same with ``sync="batch"``, so the group-commit path runs under the model."""

    def _open(self) -> Bitcask:
        return Bitcask.open(
            self.directory,
            sync="batch",
            batch_delay_ms=0.0,
            value_bytes_max=VALUE_BYTES_MAX,
            file_bytes_max=4_096,
        )


DurableBitcaskContract.TestCase.settings = settings(
    DurableBitcaskContract.TestCase.settings, max_examples=10, stateful_step_count=25
)
TestDurableBitcaskContract = DurableBitcaskContract.TestCase
