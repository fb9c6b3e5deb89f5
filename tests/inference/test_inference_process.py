"""Process-level: ``blocks inference serve`` as a real process driven by the openai client;
the CLI's ``generate`` and ``bench inference`` through its ``main`` in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

openai = pytest.importorskip("openai")


@pytest.mark.process
def test_serve_process_answers_and_stops_cleanly() -> None:
    command = [
        sys.executable,
        "-m",
        "blocks",
        "inference",
        "serve",
        "--model",
        "tiny-random",
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        "sk-proc",
        "--num-blocks",
        "64",
        "--max-model-len",
        "512",
        "--threads",
        "1",
        "--json",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "no output"
        listen = json.loads(line)["listen"]
        c = openai.OpenAI(
            base_url=f"http://{listen}/v1", api_key="sk-proc", max_retries=0, timeout=30
        )
        reply = c.completions.create(
            model="tiny-random", prompt="Hello", max_tokens=5, temperature=0
        )
        assert reply.usage.completion_tokens == 5 and len(reply.choices[0].text) <= 5
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"http://{listen}/v1", api_key="wrong", max_retries=0
            ).models.list()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def generate_json(capsys: pytest.CaptureFixture[str], *options: str) -> dict[str, object]:
    """``blocks inference generate ... --json`` through the CLI's ``main``, in this process
    (a subprocess would import torch again for each run); its printed JSON."""
    from blocks.cli import main

    capsys.readouterr()
    command = ["inference", "generate", "--model", "tiny-random", "--prompt", "abcabcabc"]
    code = main([*command, "--max-tokens", "6", *options, "--threads", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    result: dict[str, object] = json.loads(out)
    return result


def test_cli_generate_json(capsys: pytest.CaptureFixture[str]) -> None:
    # n-gram drafts inside the batched engine
    result = generate_json(capsys, "--num-speculative-tokens", "3")
    assert result["completion_tokens"] == 6 and result["finish_reason"] == "length"
    spec = generate_json(capsys, "--speculative", "ngram")
    # Both speculative paths (the engine's drafts, the single-sequence decoder) give greedy text.
    assert spec["text"] == result["text"]


def test_benchmark_runs_on_the_tiny_model(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    # Through the CLI's ``main`` in this process (the benchmark measures in-process anyway).
    from blocks.cli import main

    options = ["--model", "tiny-random", "--quick", "--rate", "50", "--threads", "1"]
    code = main(["bench", "inference", *options, "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "inference" / "throughput.json").read_text())
    assert [r["contender"] for r in rows] == ["blocks engine", "one at a time", "hf generate"]
    assert float(rows[0]["output tok/s"]) > 0
