"""One ``blocks inference serve --model tiny-random`` process shared by the test modules
that drive it through the official client (``conftest.tiny_served``): each start costs a
Python process importing torch and building the model, a few seconds here, so the modules
that only send requests share one instead of starting three."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

KEY = "sk-t"
# tiny-random's whole context (``ModelConfig.tiny``): the tools tests' prompt (~425 tokens)
# and a call's answer fit in it; the embeddings tests probe this bound itself.
MAX_MODEL_LEN = 512


class InferenceServeProcess:
    """``blocks inference serve`` with ``serve_args`` on a free port of 127.0.0.1, one thread,
    behind ``api_key``; ``listen`` (and ``address``) once it prints them. ``close`` always
    kills it (no test of its users checks a graceful stop)."""

    def __init__(self, *serve_args: str, api_key: str) -> None:
        command = [
            *(sys.executable, "-m", "blocks", "inference", "serve", *serve_args),
            *("--listen", "127.0.0.1:0", "--api-key", api_key, "--threads", "1", "--json"),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the server prints its address once it listens
        if not line:
            self.close()
            raise AssertionError(self.proc.stderr.read() if self.proc.stderr else "no output")
        self.listen = str(json.loads(line)["listen"])
        host, _, port = self.listen.rpartition(":")
        self.address = (host, int(port))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=20)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class TinyServed(InferenceServeProcess):
    """The tiny-random server and one official client (``max_retries=0``)."""

    def __init__(self) -> None:
        import openai

        super().__init__(
            *("--model", "tiny-random", "--max-model-len", str(MAX_MODEL_LEN)), api_key=KEY
        )
        self.client: Any = openai.OpenAI(
            base_url=f"http://{self.listen}/v1", api_key=KEY, max_retries=0, timeout=120
        )
