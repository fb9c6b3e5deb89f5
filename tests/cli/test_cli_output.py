"""Output as users expect: ``-`` reads records from stdin, human output is aligned text and
never a Python repr, ``--json`` is JSON."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from blocks.cli import main, print_result


def _serve(block: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "blocks", block, "serve", "--listen", "127.0.0.1:0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    processes = {block: _serve(block) for block in ("queue", "pubsub", "cache")}
    try:
        addresses = {}
        for block, process in processes.items():
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else block
            addresses[block] = json.loads(line)["address"]
        yield addresses
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            process.communicate(timeout=30)


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    stdin: str = "",
) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_queue_send_reads_one_message_a_line_from_stdin(
    servers: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    address = ("--address", servers["queue"])
    run(capsys, monkeypatch, "queue", "create", "lines", *address)
    out = run(capsys, monkeypatch, "queue", "send", "lines", "-", *address, stdin="a\nb c\n\n")
    assert len(out.split()) == 2  # one id a line, blank lines skipped
    out = run(capsys, monkeypatch, "queue", "receive", "lines", "--max", "10", "--json", *address)
    assert sorted(message["body"] for message in json.loads(out)) == ["a", "b c"]


def test_pubsub_produce_reads_one_record_a_line_from_stdin(
    servers: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    address = ("--address", servers["pubsub"])
    run(capsys, monkeypatch, "pubsub", "create-topic", "lines", *address)
    out = run(
        capsys, monkeypatch, "pubsub", "produce", "lines", "-", "--json", *address, stdin="x\ny\n"
    )
    assert json.loads(out) == [[0, 0], [0, 1]]
    out = run(capsys, monkeypatch, "pubsub", "consume", "lines", "--max", "2", "--json", *address)
    assert [record["value"] for record in json.loads(out)] == ["x", "y"]  # never a literal "-"


def test_cache_commands_print_text_not_reprs(
    servers: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    address = ("--address", servers["cache"])
    assert run(capsys, monkeypatch, "cache", "put", "k", "v", *address) == "stored k\n"
    stats = run(capsys, monkeypatch, "cache", "stats", *address)
    assert "{" not in stats and "hits" in stats and len(stats.splitlines()) > 1
    assert run(capsys, monkeypatch, "cache", "delete", "k", *address) == "deleted k\n"
    assert run(capsys, monkeypatch, "cache", "put", "k", "v", "--json", *address) == "true\n"


def test_print_result_aligns_dicts_and_never_prints_a_repr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_result({"documents": 2, "vectors": 12, "dim": 4}, as_json=False)
    assert capsys.readouterr().out == "documents  2\nvectors    12\ndim        4\n"
    print_result(True, as_json=False)
    assert capsys.readouterr().out == "yes\n"
    print_result(None, as_json=False)
    assert capsys.readouterr().out == "ok\n"
