"""The interface of a key-value store, as every kv implementation honours it.

Contract (checked by ``blocks.kv.contract`` against a plain dict):

* **Keys** are ``bytes`` or ``str`` (a ``str`` is its UTF-8 bytes: ``"a"`` and ``b"a"`` are
  the same key) of 0 to 64 KiB: the empty key is a key like any other, on every path (API,
  gRPC, the framed data path), as in Redis. **Values** are bytes-like, at most the store's
  ``value_bytes_max``. Anything else raises ``InvalidArgument`` and changes nothing; a
  ``put_many`` with one bad pair writes none of them.
* **Consistency**: a single store is linearizable: a ``get`` returns the value of the latest
  completed ``put`` of that key, or ``None`` after a ``delete`` or if it was never written.
* **Durability** follows the store's sync policy: under ``always`` and ``batch`` a call that
  returned survives a crash of the process or the machine; under ``never`` it survives a
  process crash only. A crash never makes a value appear that was not written.
* **Errors**: ``FailedPrecondition`` after ``close()`` or when another writer holds the
  store; ``Corruption`` when stored bytes fail their checksum (never returned as data);
  ``Unavailable`` when the disk refuses a write (nothing was acknowledged).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

__all__ = ["KeyValueStore"]


@runtime_checkable
class KeyValueStore(Protocol):
    """A synchronous key-value store over bytes."""

    def put(self, key: bytes | str, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""
        ...

    def get(self, key: bytes | str) -> bytes | None:
        """Return the value of ``key``, or ``None`` if it is absent."""
        ...

    def delete(self, key: bytes | str) -> bool:
        """Remove ``key``; return whether it was present."""
        ...

    def put_many(self, items: Iterable[tuple[bytes | str, bytes]]) -> None:
        """Store every pair, in order (a repeated key ends with its last value)."""
        ...

    def get_many(self, keys: Iterable[bytes | str]) -> list[bytes | None]:
        """Return the values of ``keys`` in the same order, ``None`` for absent ones."""
        ...

    def keys(self) -> list[bytes]:
        """Every live key as bytes, in no particular order."""
        ...

    def __len__(self) -> int:
        """The number of live keys."""
        ...

    def close(self) -> None:
        """Release the store; further calls raise ``FailedPrecondition``; idempotent."""
        ...
