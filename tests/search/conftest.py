"""Fixtures shared by the search tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="package", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    """faiss and torch on one thread here, and in the ``serve`` processes the tests start.

    The answers do not depend on it; the time does: on two loaded cores the two OpenMP
    threads spin at every barrier, and a 3-query search of 40 vectors took 28 ms (cProfile
    of the faiss contract, load 10). With one thread, at load 9-15: the faiss contracts 66
    and 54 s -> 22 and 25 s, the torch top-k properties 69, 58 and 30 s -> 27, 30 and 3 s.
    Scoped to this package: faiss's setting is the main thread's, torch's the process's,
    both restored after; the environment variable reaches the processes started meanwhile.
    """
    import faiss
    import torch

    previous, previous_torch = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    faiss.omp_set_num_threads(previous)
    torch.set_num_threads(previous_torch)


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
