"""The engines behind ``--backend engines``, started on demand and stopped with the session.

Theory of operation. ``Engines`` starts each engine the first time a block asks for it and
registers its stop with the session's ``Services``, so a design that needs no Redis starts
none, and a session that fails half way still leaves no process behind:

* NATS JetStream and Redis: ``blocks.testing.engines.NatsServer``/``RedisServer``, the real
  ``nats-server -js``/``redis-server`` binaries the test extra installs beside the
  interpreter, on free 127.0.0.1 ports, with their files under the session's directory;
* the S3 endpoint: moto's S3 server (any S3 would do), in this process's threads;
* the OpenAI URL: ``base_url`` when given, else ``blocks inference serve`` as a process of its
  own, ready when ``GET /health`` answers 200 (within ``INFERENCE_READY_TIMEOUT_S``: loading
  torch on a busy machine takes a while).

A missing binary or package is a ``FailedPrecondition`` naming what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from blocks.core.errors import FailedPrecondition
from blocks.testing.engines import NatsServer, RedisServer, nats_missing, redis_missing
from blocks.testing.ports import free_ports
from examples.common import Services

__all__ = ["INFERENCE_READY_TIMEOUT_S", "Engines"]

INFERENCE_READY_TIMEOUT_S = 180.0  # under the suite's 300 s per-test timeout
INFERENCE_STOP_TIMEOUT_S = 10.0
LOG_TAIL_BYTES = 2000
log = logging.getLogger(__name__)


class Engines:
    """``await engines.nats_url()`` etc.: each engine started once, stopped by ``services``."""

    def __init__(self, services: Services, directory: Path) -> None:
        self._services = services
        self._directory = directory
        self._nats: NatsServer | None = None
        self._redis: RedisServer | None = None
        self._s3: str | None = None
        self._openai: str | None = None
        self._lock = asyncio.Lock()
        self.started: list[str] = []
        """What was started, for the narration: ``nats-server at nats://...`` etc."""

    async def nats_url(self) -> str:
        async with self._lock:
            if self._nats is None:
                missing = nats_missing()
                if missing is not None:
                    raise FailedPrecondition(f"--backend engines needs NATS: {missing}")
                server = NatsServer(self._directory / "nats")
                await asyncio.to_thread(server.start)
                self._services.defer("nats-server", lambda: asyncio.to_thread(server.stop))
                self._nats = server
                self.started.append(f"nats-server -js at {server.url}")
            return self._nats.url

    async def redis_url(self) -> str:
        async with self._lock:
            if self._redis is None:
                missing = redis_missing()
                if missing is not None:
                    raise FailedPrecondition(f"--backend engines needs Redis: {missing}")
                server = RedisServer(self._directory / "redis", appendfsync="everysec")
                await asyncio.to_thread(server.start)
                self._services.defer("redis-server", lambda: asyncio.to_thread(server.stop))
                self._redis = server
                self.started.append(f"redis-server at {server.url}")
            return self._redis.url

    async def s3_endpoint(self) -> str:
        """An S3 endpoint (moto's server) that takes any access key."""
        async with self._lock:
            if self._s3 is None:
                try:
                    from moto.server import ThreadedMotoServer
                except ImportError as error:
                    raise FailedPrecondition(
                        f"--backend engines needs an S3 endpoint: pip install 'moto[server]' "
                        f"({error})"
                    ) from None
                logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
                server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_ports(1)[0])
                await asyncio.to_thread(_quietly, server.start)
                self._services.defer("moto-s3", lambda: asyncio.to_thread(server.stop))
                host, port = server.get_host_and_port()
                self._s3 = f"http://{host}:{port}"
                self.started.append(f"moto S3 server at {self._s3}")
            return self._s3

    async def openai_url(self, model: str, device: str | None, max_model_len: int) -> str:
        """``http://127.0.0.1:PORT/v1`` of a ``blocks inference serve`` process for ``model``."""
        async with self._lock:
            if self._openai is None:
                self._openai = await self._start_inference(model, device, max_model_len)
            return self._openai

    async def _start_inference(self, model: str, device: str | None, max_model_len: int) -> str:
        port = free_ports(1)[0]
        argv = [sys.executable, "-m", "blocks", "inference", "serve", "--model", model]
        argv += ["--listen", f"127.0.0.1:{port}", "--max-model-len", str(max_model_len)]
        argv += ["--num-blocks", "256", "--log-level", "warning"]
        if device is not None:
            argv += ["--device", device]
        self._directory.mkdir(parents=True, exist_ok=True)
        log_path = self._directory / "inference.log"
        with log_path.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=output, stderr=asyncio.subprocess.STDOUT
            )

        async def stop() -> None:
            if process.returncode is not None:
                return
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), INFERENCE_STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()

        self._services.defer("inference-serve", stop)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + INFERENCE_READY_TIMEOUT_S
        while not await asyncio.to_thread(_healthy, base):
            if process.returncode is not None or time.monotonic() > deadline:
                tail = log_path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")
                why = (
                    f"exited with {process.returncode}"
                    if process.returncode is not None
                    else (f"not ready within {INFERENCE_READY_TIMEOUT_S:.0f} s")
                )
                raise FailedPrecondition(f"blocks inference serve {why}: {tail}")
            await asyncio.sleep(0.2)
        self.started.append(f"blocks inference serve ({model}) at {base}/v1")
        return f"{base}/v1"


def _quietly(start: Callable[[], None]) -> None:
    """Run ``start`` with its prints sent to stderr: moto announces itself on stdout, where
    ``--json`` puts the outcome."""
    with contextlib.redirect_stdout(sys.stderr):
        start()


def _healthy(base: str) -> bool:
    with (
        contextlib.suppress(OSError, urllib.error.URLError),
        urllib.request.urlopen(f"{base}/health", timeout=2.0) as response,
    ):
        return bool(response.status == 200)
    return False
