"""A public conformance kit: any ``KeyValueStore`` checked against a dict, by Hypothesis.

Use it by subclassing ``KeyValueStoreContract`` (a ``blocks.testing.contract.Contract``) and
saying how to build your store::

    class TestMyStore(KeyValueStoreContract):
        def make_subject(self) -> KeyValueStore:
            return MyStore(...)

    TestMyStore.TestCase.settings = settings(max_examples=50)
    test_my_store = TestMyStore.TestCase

Optional hooks: ``restart_subject(store)`` (close and open again on the same durable state;
return ``None`` when the store is not durable, and the rule is then a no-op),
``close_subject(store)``, ``compact`` (run a merge or compaction) and ``value_bytes_max``
(then oversize values are tried too). ``make_store`` and ``reopen_store`` are deprecated
aliases of ``make_subject`` and ``restart_subject``.

Rules the ``dict[bytes, bytes]`` model enforces:

* a ``str`` key is its UTF-8 bytes: ``"a"`` and ``b"a"`` are one key;
* ``get`` returns the last value put for the key, or ``None``; ``get_many`` returns those
  values in the order asked, ``None`` for each missing key;
* ``put_many`` applies its pairs in order (a key repeated in one call ends with its last value);
* ``delete`` returns whether the key existed, and removes it;
* ``len`` and ``keys()`` always match the model (an invariant after every step);
* a restart (``restart_subject``) and a compaction change nothing a read can see;
* (each rule beyond put, get and the invariant runs only when ``supports`` its property:
  ``batch order``, ``delete``, ``restart``, ``bad input``; see ``declared_properties``)
* refused input raises ``InvalidArgument`` and changes nothing: keys that are not bytes or
  str, keys over ``KEY_BYTES_MAX`` bytes, values that are not bytes, values over
  ``value_bytes_max``, and a ``put_many`` with one bad pair (none of its pairs is stored).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from blocks.core.errors import InvalidArgument
from blocks.kv.api import KeyValueStore
from blocks.kv.limits import KEY_BYTES_MAX
from blocks.testing.contract import Contract

__all__ = ["KeyValueStoreContract", "key_strategy", "value_strategy"]


def key_strategy() -> st.SearchStrategy[bytes | str]:
    """Short keys, so they repeat: bytes, and text whose UTF-8 may collide with the bytes."""
    return st.one_of(st.binary(max_size=4), st.text(alphabet="abcé\x00", max_size=3))


def value_strategy() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=32), st.binary(min_size=200, max_size=2_000))


def _as_bytes(key: bytes | str) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


class _OversizeKey:
    """Stands for a key one byte over the limit (built lazily to keep reports short)."""

    def __repr__(self) -> str:
        return "<key of KEY_BYTES_MAX + 1 bytes>"


_BAD_KEYS: tuple[Any, ...] = (None, 7, 1.5, ["a"], _OversizeKey())


def _materialize(bad_key: Any) -> Any:
    return b"k" * (KEY_BYTES_MAX + 1) if isinstance(bad_key, _OversizeKey) else bad_key


_BAD_VALUES: tuple[Any, ...] = (None, "text", 3, ["v"])


class KeyValueStoreContract(Contract[KeyValueStore]):
    """Checks a ``KeyValueStore`` against a ``dict[bytes, bytes]`` model."""

    properties = ("read-your-writes", "delete", "batch order", "restart", "bad input")
    legacy_hooks = {"make_store": "make_subject", "reopen_store": "restart_subject"}

    value_bytes_max: int | None = None
    """Set to the store's limit to have oversize values tried as bad input."""

    keys_bundle = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[bytes, bytes] = {}
        self.store: KeyValueStore = self.open_subject()

    # -- hooks ------------------------------------------------------------------------------

    def make_subject(self) -> KeyValueStore:
        return self.make_store()

    def restart_subject(self, store: KeyValueStore) -> KeyValueStore | None:
        """Close ``store`` and open the same durable state again; ``None`` if not durable."""
        return self.reopen_store(store)

    def make_store(self) -> KeyValueStore:
        """Deprecated alias of ``make_subject``."""
        raise NotImplementedError(f"{type(self).__name__} must override make_subject()")

    def reopen_store(self, store: KeyValueStore) -> KeyValueStore | None:
        """Deprecated alias of ``restart_subject``."""
        return None

    def compact(self, store: KeyValueStore) -> None:
        """Run the store's compaction, if it has one."""

    def teardown(self) -> None:
        self.finish_subject(self.store)

    # -- rules ------------------------------------------------------------------------------

    @initialize(target=keys_bundle, keys=st.lists(key_strategy(), min_size=1, max_size=3))
    def initial_keys(self, keys: list[bytes | str]) -> MultipleResults[bytes | str]:
        return multiple(*keys)

    @rule(target=keys_bundle, key=key_strategy())
    def new_key(self, key: bytes | str) -> bytes | str:
        return key

    @rule(key=keys_bundle, value=value_strategy())
    def put(self, key: bytes | str, value: bytes) -> None:
        self.store.put(key, value)
        self.model[_as_bytes(key)] = value

    @precondition(lambda self: self.supports("batch order"))
    @rule(items=st.lists(st.tuples(keys_bundle, value_strategy()), max_size=5))
    def put_many(self, items: list[tuple[bytes | str, bytes]]) -> None:
        self.store.put_many(items)
        for key, value in items:
            self.model[_as_bytes(key)] = value

    @rule(key=keys_bundle)
    def get(self, key: bytes | str) -> None:
        assert self.store.get(key) == self.model.get(_as_bytes(key))

    @precondition(lambda self: self.supports("batch order"))
    @rule(keys=st.lists(keys_bundle, max_size=5))
    def get_many(self, keys: list[bytes | str]) -> None:
        assert self.store.get_many(keys) == [self.model.get(_as_bytes(k)) for k in keys]

    @precondition(lambda self: self.supports("delete"))
    @rule(key=keys_bundle)
    def delete(self, key: bytes | str) -> None:
        existed = self.store.delete(key)
        assert existed == (_as_bytes(key) in self.model)
        self.model.pop(_as_bytes(key), None)

    @precondition(lambda self: self.supports("bad input"))
    @rule(bad_key=st.sampled_from(_BAD_KEYS), value=value_strategy())
    def put_bad_key(self, bad_key: Any, value: bytes) -> None:
        bad_key = _materialize(bad_key)
        self._expect_refused(lambda: self.store.put(bad_key, value))
        self._expect_refused(lambda: self.store.get(bad_key))
        self._expect_refused(lambda: self.store.delete(bad_key))

    @precondition(lambda self: self.supports("bad input"))
    @rule(key=keys_bundle, bad_value=st.sampled_from(_BAD_VALUES), oversize=st.booleans())
    def put_bad_value(self, key: bytes | str, bad_value: Any, oversize: bool) -> None:
        if oversize and self.value_bytes_max is not None:
            bad_value = b"x" * (self.value_bytes_max + 1)
        self._expect_refused(lambda: self.store.put(key, bad_value))

    @precondition(lambda self: self.supports("bad input"))
    @rule(
        good=st.lists(st.tuples(keys_bundle, value_strategy()), max_size=3),
        bad_key=st.sampled_from(_BAD_KEYS),
    )
    def put_many_with_one_bad_pair(self, good: list[tuple[Any, bytes]], bad_key: Any) -> None:
        items = [*good, (_materialize(bad_key), b"v")]
        self._expect_refused(lambda: self.store.put_many(items))

    @precondition(lambda self: self.supports("restart"))
    @rule()
    def reopen(self) -> None:
        reopened = self.reopen_subject(self.store)
        if reopened is not None:
            self.store = reopened

    @rule()
    def compact_store(self) -> None:
        self.compact(self.store)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def same_keys(self) -> None:
        assert len(self.store) == len(self.model)
        assert sorted(self.store.keys()) == sorted(self.model)

    @staticmethod
    def _expect_refused(call: Any) -> None:
        try:
            call()
        except InvalidArgument:
            return
        raise AssertionError("bad input was accepted")
