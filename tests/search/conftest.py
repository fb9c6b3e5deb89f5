"""Fixtures shared by the search tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="package", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    """faiss on one OpenMP thread here, and in the ``serve`` processes the tests start.

    The answers do not depend on it; the time does: on two loaded cores faiss's two OpenMP
    threads spin at every barrier, and a 3-query search of 40 vectors took 28 ms (cProfile
    of the faiss contract, load 10; the faiss contracts went from 61 and 48 s to 22 and 25 s
    with one thread). Scoped to this package: the setting is the main thread's and the
    environment variable is read by processes started while it is set, both restored after.
    """
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    faiss.omp_set_num_threads(previous)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running on its own thread (for handlers called from test threads)."""
    event_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=event_loop.run_forever, daemon=True)
    thread.start()
    yield event_loop
    event_loop.call_soon_threadsafe(event_loop.stop)
    thread.join()
    event_loop.close()
