"""``SyncClient``: the kv client for scripts and notebooks, with plain blocking calls.

Theory of operation. A private event loop runs in one daemon thread
(``blocks.core.loop_thread.LoopThread``); each method submits a coroutine to it and waits for
the result, bounded by the client's timeout plus a margin. The wrapper implements the ``KeyValueStore`` interface
(``put``/``get``/``delete``/``put_many``/``get_many``/``keys``/``len``), so the public contract
runs against a cluster through it: ``put`` and ``delete`` read first and write with the read's
context, so they supersede every sibling the read saw, as a single store's put would.
``get_versioned`` and ``put_versioned`` expose siblings and contexts.

``SyncClient.connect(["host:port", ...])`` reaches processes; ``SyncClient(factory)`` runs any
async set-up (a ``LocalCluster``, say) on the private loop and wraps the client it returns.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from blocks.core.loop_thread import LoopThread
from blocks.core.rpc import PemSource
from blocks.kv.client import DEFAULT_TIMEOUT_S, KVClient, Versioned, connect
from blocks.kv.limits import check_batch_size, check_key, check_value

__all__ = ["SyncClient"]

T = TypeVar("T")
MARGIN_S = 5.0


class SyncClient:
    """Blocking kv calls over a ``KVClient`` living on a private loop."""

    def __init__(
        self,
        factory: Callable[[], Awaitable[KVClient]],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._runner = LoopThread("blocks-kv")
        self._on_close = on_close
        self._closed = False
        try:
            self._client: KVClient = self._run(_await(factory()), 60.0)
        except BaseException:
            self._shutdown()
            raise

    @classmethod
    def connect(
        cls,
        addresses: Iterable[str] | str,
        *,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tls_ca: PemSource | ssl.SSLContext | None = None,
        tls_server_name: str | None = None,
    ) -> SyncClient:
        """A blocking client for processes; the options are ``blocks.kv.connect``'s."""

        async def make() -> KVClient:
            return await connect(
                addresses,
                token=token,
                timeout_s=timeout_s,
                tls_ca=tls_ca,
                tls_server_name=tls_server_name,
            )

        return cls(make)

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        return self._runner.call(coroutine, timeout_s if timeout_s is not None else self._timeout())

    def _timeout(self) -> float:
        return self._client.timeout_s * 4 + MARGIN_S

    # -- versioned calls ---------------------------------------------------------------------

    def get_versioned(self, key: bytes | str) -> Versioned:
        return self._run(self._client.get(key))

    def put_versioned(self, key: bytes | str, value: bytes, context: bytes | None) -> Versioned:
        return self._run(self._client.put(key, value, context))

    # -- KeyValueStore -------------------------------------------------------------------------

    def put(self, key: bytes | str, value: bytes) -> None:
        check_key(key)
        check_value(value, self._client.value_bytes_max)
        self._run(self._overwrite(key, value))

    async def _overwrite(self, key: bytes | str, value: bytes | None) -> bool:
        seen = await self._client.get(key)
        if value is None:
            if seen.value is None:
                return False
            await self._client.delete(key, seen.context)
        else:
            await self._client.put(key, value, seen.context)
        return True

    def get(self, key: bytes | str) -> bytes | None:
        check_key(key)
        return self.get_versioned(key).value

    def delete(self, key: bytes | str) -> bool:
        check_key(key)
        return self._run(self._overwrite(key, None))

    def put_many(self, items: Iterable[tuple[bytes | str, bytes]]) -> None:
        pairs = list(items)
        check_batch_size(len(pairs))
        for key, value in pairs:
            check_key(key)
            check_value(value, self._client.value_bytes_max)
        for key, value in pairs:
            self.put(key, value)

    def get_many(self, keys: Iterable[bytes | str]) -> list[bytes | None]:
        wanted = list(keys)
        check_batch_size(len(wanted))
        for key in wanted:
            check_key(key)
        return [self.get(key) for key in wanted]

    def keys(self) -> list[bytes]:
        return self._run(self._client.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def status(self) -> list[dict[str, Any]]:
        return self._run(self._client.status())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._client.close(), 30.0)
            if self._on_close is not None:
                self._run(_await(self._on_close()), 60.0)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._runner.stop()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
