"""Run a BlobServer on its own event loop in a background thread (for synchronous boto3)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from blocks.blob.server import BlobServer


@contextmanager
def running_server(store: Any, **kwargs: Any) -> Iterator[BlobServer]:
    loop = asyncio.new_event_loop()
    server = BlobServer(store, **kwargs)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert started.wait(10), "server did not start"
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace_s=2), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
