"""``ReplicaLink`` against a real search server: the kept poller thread and the data path.

gRPC's synchronous channel starts a poller thread when a call begins on a channel with no
call open; ``keep_poller`` holds the replica's health ``Watch`` stream open so that thread
starts once per link, not once per search (``blocks.search.replica_link``). Searches go to
the node's data port when it has one (``blocks.search.datapath``): the same answers and
errors as over gRPC, the token checked, a restart on a new data port found again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

from blocks.core.errors import InvalidArgument, Unauthenticated, Unavailable
from blocks.search import ExactIndex, search_pb2
from blocks.search.datapath import OP_SEARCH, DataPathClient, SearchDataPath
from blocks.search.replica_link import KEEPER_REOPEN_S, ReplicaLink, outcome
from blocks.search.service import SearchNode, build_server
from blocks.search.wire import decode_reply, fill_batch

TOKEN = "s3cret"


def _pollers() -> set[int]:
    """Idents of the live gRPC channel poller threads (running ``channel_spin``). A thread
    that ended and a new one may share an ident, so the tests also count thread starts."""
    found = set()
    for ident, frame in sys._current_frames().items():
        walk: Any = frame
        while walk is not None:
            if walk.f_code.co_name == "channel_spin":
                found.add(ident)
                break
            walk = walk.f_back
    return found


class _Serving:
    """A search server on its own event loop thread, restartable on the same port."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: Any = None
        self.port = 0

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def start(self) -> str:
        async def start() -> Any:
            node = SearchNode(ExactIndex(4, "l2"))
            node.add_vectors(np.arange(3), np.eye(3, 4, dtype=np.float32))
            server, service = build_server(node, port=self.port, token=TOKEN, data_path=True)
            await server.start()
            return server, service

        self.server, self.service = self._run(start())
        self.port = int(self.server.address.rpartition(":")[2])
        return str(self.server.address)

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.stop(grace_s=0))
            self.server = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@pytest.fixture
def serving() -> Any:
    served = _Serving()
    yield served
    served.close()


def _request(k: int = 1) -> Any:
    request = search_pb2.SearchVectorsRequest(k=k, packed_reply=True)
    fill_batch(request.queries, np.eye(3, 4, dtype=np.float32) + np.float32(0.25))
    return request


def _search(link: ReplicaLink, k: int = 1) -> list[int]:
    ids, _ = decode_reply(link.call("SearchVectors", _request(k), 10))
    return [int(i) for i in ids.ravel()]


def _on_data_path(link: ReplicaLink) -> bool:
    """Whether the link's next search goes to the data path (a ``concurrent.futures``
    future; gRPC's futures are not)."""
    future = link.start("SearchVectors", _request(), 10)
    outcome(future)
    return isinstance(future, concurrent.futures.Future)


def _wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def poller_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the gRPC poller threads started while the test runs (gRPC starts them as
    ``ForkManagedThread``s, whose thread runs ``_run``)."""
    started: list[str] = []
    start = threading.Thread.start

    def counting(thread: threading.Thread) -> None:
        if thread.name.endswith("(_run)"):
            started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counting)
    return started


def test_one_poller_thread_serves_every_call_of_a_kept_link(
    serving: _Serving, poller_starts: list[str]
) -> None:
    address = serving.start()
    link = ReplicaLink(address, token=TOKEN)
    try:
        assert _search(link) == [0, 1, 2]
        kept = _pollers()
        assert len(kept) == 1
        before = len(poller_starts)
        for _ in range(5):
            assert _search(link) == [0, 1, 2]
            assert _pollers() == kept
        assert len(poller_starts) == before  # no thread started per call
    finally:
        link.close()
    _wait_until(lambda: not (_pollers() & kept))  # closing the link ends its poller


def test_a_kept_link_survives_a_restart_and_keeps_the_token(serving: _Serving) -> None:
    address = serving.start()
    link = ReplicaLink(address, token=TOKEN)
    try:
        assert _search(link) == [0, 1, 2]
        serving.stop()
        serving.start()
        _wait_until(lambda: _retry(link))  # reconnects within the channel's backoff
        # The stream was let go of at NOT_SERVING and is reopened at most once per
        # KEEPER_REOPEN_S (twice if the first reopen met the server still stopping).
        time.sleep(2.5 * KEEPER_REOPEN_S)
        kept = _pollers()
        assert len(kept) == 1
        assert _search(link) == [0, 1, 2]
        assert _pollers() == kept
    finally:
        link.close()
    wrong = ReplicaLink(address, token="wrong")
    try:
        with pytest.raises(Unauthenticated):
            _search(wrong)
    finally:
        wrong.close()


def test_a_graceful_stop_is_not_held_for_its_grace_by_a_kept_link(serving: _Serving) -> None:
    """The kept ``Watch`` stream is an open call: unless the server ends it at
    ``NOT_SERVING`` (``blocks.core.health``), its stop waits out the whole grace (20 s
    here)."""
    address = serving.start()
    link = ReplicaLink(address, token=TOKEN)
    try:
        assert _search(link) == [0, 1, 2]
        started = time.monotonic()
        serving._run(serving.server.stop(grace_s=20))
        serving.server = None
        assert time.monotonic() - started < 10
        serving.start()  # the stream is opened again (after KEEPER_REOPEN_S) and kept
        _wait_until(lambda: _retry(link))
        time.sleep(1.5 * KEEPER_REOPEN_S)
        kept = _pollers()
        assert len(kept) == 1
        time.sleep(2.5 * KEEPER_REOPEN_S)  # letting go of SERVING would start new pollers
        assert _search(link) == [0, 1, 2] and _pollers() == kept
    finally:
        link.close()


def _retry(link: ReplicaLink) -> bool:
    try:
        return _search(link) == [0, 1, 2]
    except Exception:
        return False


def test_searches_take_the_data_path_with_the_grpc_answers_and_errors(serving: _Serving) -> None:
    address = serving.start()
    plain = ReplicaLink(address, token=TOKEN)
    info = plain.call("Info", search_pb2.InfoRequest(), 10)
    assert info.data_port == serving.service.data_port > 0
    data = DataPathClient(token=TOKEN)
    link = ReplicaLink(address, token=TOKEN)
    link.use_data_path(data, int(info.data_port))
    try:
        assert _on_data_path(link) and not _on_data_path(plain)
        over_tcp = decode_reply(link.call("SearchVectors", _request(3), 10))
        over_grpc = decode_reply(plain.call("SearchVectors", _request(3), 10))
        for tcp_part, grpc_part in zip(over_tcp, over_grpc, strict=True):
            np.testing.assert_array_equal(tcp_part, grpc_part)
        with pytest.raises(InvalidArgument):  # the node's own validation, its error class
            link.call("SearchVectors", _request(0), 10)
        future = link.start("SearchVectors", _request(), 10)
        future.cancel()
        if future.cancelled():  # unless it was already answered
            with pytest.raises(Unavailable):
                outcome(future)
    finally:
        for each in (plain, link):
            each.close()
        data.close()
    wrong = DataPathClient(token="wrong")
    refused = ReplicaLink(address, token=TOKEN)
    refused.use_data_path(wrong, int(info.data_port))
    try:
        with pytest.raises(Unauthenticated):
            refused.call("SearchVectors", _request(), 10)
    finally:
        refused.close()
        wrong.close()


def test_after_a_restart_on_a_new_data_port_searches_find_it_again(serving: _Serving) -> None:
    address = serving.start()
    first_port = serving.service.data_port
    data = DataPathClient(token=TOKEN)
    link = ReplicaLink(address, token=TOKEN)
    link.use_data_path(data, first_port)
    try:
        assert _on_data_path(link)
        serving.stop()
        with pytest.raises(Unavailable):  # the old data port is gone: retryable
            link.call("SearchVectors", _request(), 10)
        serving.start()
        assert serving.service.data_port != first_port
        _wait_until(lambda: _retry(link) and _on_data_path(link))
    finally:
        link.close()
        data.close()


def test_the_listener_refuses_frames_that_are_not_a_search() -> None:
    async def never(request: Any) -> Any:
        raise AssertionError("not a search: must not reach the service")

    async def scenario() -> None:
        listener = SearchDataPath(never, "127.0.0.1")
        for frame in (
            [OP_SEARCH],
            [OP_SEARCH + 1, b""],
            [OP_SEARCH, "text"],
            "x",
            [OP_SEARCH, b"\xff"],
        ):
            with pytest.raises(InvalidArgument):
                await listener.handle("peer", frame)

    asyncio.run(scenario())
