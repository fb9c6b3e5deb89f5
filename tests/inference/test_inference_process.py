"""Process-level: ``blocks inference serve`` as a real process, driven by the openai client."""

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


def test_cli_generate_json() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "blocks",
            "inference",
            "generate",
            "--model",
            "tiny-random",
            "--prompt",
            "abcabcabc",
            "--max-tokens",
            "6",
            "--num-speculative-tokens",  # n-gram drafts inside the batched engine
            "3",
            "--threads",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["completion_tokens"] == 6 and result["finish_reason"] == "length"
    spec = subprocess.run(
        [
            sys.executable,
            "-m",
            "blocks",
            "inference",
            "generate",
            "--model",
            "tiny-random",
            "--prompt",
            "abcabcabc",
            "--max-tokens",
            "6",
            "--speculative",
            "ngram",
            "--threads",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # Both speculative paths (the engine's drafts, the single-sequence decoder) give greedy text.
    assert json.loads(spec.stdout)["text"] == result["text"]


def test_benchmark_runs_on_the_tiny_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "blocks",
            "bench",
            "inference",
            "--model",
            "tiny-random",
            "--quick",
            "--rate",
            "50",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = json.loads((tmp_path / "inference" / "throughput.json").read_text())
    assert [r["contender"] for r in rows] == ["blocks engine", "one at a time", "hf generate"]
    assert float(rows[0]["output tok/s"]) > 0
