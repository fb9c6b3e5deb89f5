"""The sweep's contenders and its client: server processes started fresh, one streaming client.

``servers`` says how to start each contender (or why it cannot run here) and how many bytes
of weights it reads per decoded token; ``run_on`` starts one on a free 127.0.0.1 port,
probes it with a real request until it answers, warms it up with one completion, runs the
caller's work and stops it whatever happens. ``drive`` sends planned requests at their
arrival times (one thread each, so a slow stream never delays another's arrival) and
records what the client saw as ``Outcome``s: ``POST /v1/completions`` streamed, greedy.
"""

from __future__ import annotations

import http.client
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _processes
from benchmarks._sweep_core import Outcome, Planned
from benchmarks.peers import PeerNotReady, free_port, start_process

__all__ = [
    "MODEL_NAME",
    "Server",
    "drive",
    "process_cpu_s",
    "run_on",
    "servers",
    "start",
    "start_with_pid",
]

MODEL_NAME = "bench"  # the id every server is started with and every request names
REQUEST_TIMEOUT_S = 600.0
START_TIMEOUT_S = 300.0  # loading a model on a loaded machine
STREAM_LINE_BYTES_MAX = 1 << 16
LLAMA_SERVER_SLOTS = 16  # llama-server's --parallel: streams decoded together


@dataclass(frozen=True, slots=True)
class Server:
    """A way to start one contender: ``argv(port)`` and the bytes it reads per token:
    ``bytes_per_token`` of weights, plus ``kv_bytes_per_position`` for every position of
    context it attends to (keys and values of every layer, at the cache's dtype)."""

    name: str
    argv: Callable[[int], list[str]]
    bytes_per_token: int
    dtype: str
    kv_bytes_per_position: int = 0


def _health(path: str) -> Callable[[int], None]:
    def probe(port: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", path)
            status = connection.getresponse().status
        finally:
            connection.close()
        if status != 200:
            raise PeerNotReady(f"GET {path} answered {status}")

    return probe


# --- the client ----------------------------------------------------------------------------


def _stream(port: int, planned: Planned, started: float, outcome: Outcome) -> None:
    body = {
        "model": MODEL_NAME,
        "prompt": planned.prompt,
        "max_tokens": planned.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    usage: int | None = None
    try:
        outcome.sent_s = time.perf_counter() - started
        connection.request(
            "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        if response.status != 200:
            outcome.error = f"HTTP {response.status}: {response.read(200)!r}"
            return
        while line := response.readline(STREAM_LINE_BYTES_MAX):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            event = json.loads(payload)
            if event.get("choices"):
                outcome.chunk_times.append(time.perf_counter() - started)
            if event.get("usage"):
                usage = int(event["usage"]["completion_tokens"])
                outcome.prompt_tokens = int(event["usage"].get("prompt_tokens", 0))
        outcome.tokens = usage if usage is not None else len(outcome.chunk_times)
    except (OSError, ValueError, http.client.HTTPException) as error:
        outcome.error = f"{type(error).__name__}: {error}"
    finally:
        connection.close()


def drive(port: int, planned: Sequence[Planned], sequential: bool = False) -> list[Outcome]:
    """Send ``planned`` at their arrival times (a thread each), or one after another."""
    outcomes = [Outcome(p.index, 0.0) for p in planned]
    started = time.perf_counter()
    if sequential:
        for p, outcome in zip(planned, outcomes, strict=True):
            _stream(port, p, started, outcome)
        return outcomes

    def send(p: Planned, outcome: Outcome) -> None:
        time.sleep(max(0.0, p.arrival_s - (time.perf_counter() - started)))
        _stream(port, p, started, outcome)

    threads = [
        threading.Thread(target=send, args=(p, o), daemon=True)
        for p, o in zip(planned, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S + 60)
    return outcomes


# --- the contenders ------------------------------------------------------------------------


def _blocks_cli() -> list[str]:
    return [sys.executable, "-m", "blocks"]


def _blocks_server(
    name: str, cli: list[str], model_arg: str, threads: int, params: int, kv_values: int
) -> Server:
    return Server(
        name,
        lambda port: [
            *cli, "inference", "serve", "--model", model_arg,
            "--threads", str(threads), "--listen", f"127.0.0.1:{port}",
            "--model-name", MODEL_NAME, "--max-queue-time-ms", "600000",
        ],
        params * 4,
        "float32",
        kv_values * 4,
    )  # fmt: skip


def servers(
    model: str, threads: int, hf_batch: int, before_src: str | None = None
) -> list[Server | tuple[str, str]]:
    """Each contender, or (name, reason) for one that cannot run here. ``before_src`` (a
    ``src`` directory of another tree) adds ``blocks@before``: our server from that code."""
    found: list[Server | tuple[str, str]] = []
    path, params, file_bytes, kv_values = _model_facts(model)
    model_arg = model if path is None else str(path)
    found.append(_blocks_server("blocks", _blocks_cli(), model_arg, threads, params, kv_values))
    if before_src is not None:
        # ``env`` execs the interpreter, so the pid the sweep records is still the server's.
        cli = ["env", f"PYTHONPATH={Path(before_src).resolve()}", *_blocks_cli()]
        found.append(_blocks_server("blocks@before", cli, model_arg, threads, params, kv_values))
    if path is None:
        found.append(("hf static", f"no GGUF file for {model!r}"))
        found.append(("llama.cpp", f"no GGUF file for {model!r}"))
        found.append(("llama-server", f"no GGUF file for {model!r}"))
        return found
    found.append(_hf_server(path, params, threads, hf_batch, kv_values))
    # llama.cpp keeps its KV cache in float16.
    found.append(_llama_cpp_server(path, file_bytes, threads, kv_values * 2))
    found.append(_llama_server(path, file_bytes, threads, kv_values * 2))
    return found


def _model_facts(model: str) -> tuple[Path | None, int, int, int]:
    """(GGUF path or None, parameter count, tensor bytes in the file, KV values cached per
    position: layers x 2 x kv_heads x head_dim)."""
    if model == "tiny-random":
        from blocks.inference.factory import tiny_random_model

        net = tiny_random_model()
        params = sum(p.numel() for p in net.parameters())
        return None, params, params * 4, _kv_values(net.config)
    from blocks.inference.gguf_file import read_gguf
    from blocks.inference.loader import resolve_model_path

    path = resolve_model_path(model)
    gguf_file = read_gguf(path)
    params = sum(math.prod(t.shape) for t in gguf_file.tensors)
    arch = gguf_file.fields["general.architecture"]

    def field(key: str, default: int = 0) -> int:
        return int(gguf_file.fields.get(f"{arch}.{key}", default))

    heads = field("attention.head_count")
    head_dim = field("rope.dimension_count", field("embedding_length") // heads)
    kv = field("block_count") * 2 * field("attention.head_count_kv", heads) * head_dim
    return path, params, sum(t.data.nbytes for t in gguf_file.tensors), kv


def _kv_values(config: Any) -> int:
    return int(config.num_layers * 2 * config.num_kv_heads * config.head_dim)


def _hf_server(
    path: Path, params: int, threads: int, batch: int, kv_values: int
) -> Server | tuple[str, str]:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        return ("hf static", "transformers not installed (pip install transformers)")
    return Server(
        "hf static",
        lambda port: [
            sys.executable, "-m", "benchmarks._sweep_hf_server", "--gguf", str(path),
            "--port", str(port), "--threads", str(threads), "--batch-max", str(batch),
        ],
        params * 4,
        "float32",
        kv_values * 4,
    )  # fmt: skip


def _llama_cpp_server(
    path: Path, file_bytes: int, threads: int, kv_bytes: int
) -> Server | tuple[str, str]:
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        reason = "llama-cpp-python not installed (CMAKE_ARGS=-DGGML_NATIVE=OFF pip install "
        return ("llama.cpp", reason + "'llama-cpp-python[server]'; it builds from source)")
    for module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            return ("llama.cpp", f"{module} missing (pip install 'llama-cpp-python[server]')")
    return Server(
        "llama.cpp",
        lambda port: [
            sys.executable, "-m", "llama_cpp.server", "--model", str(path),
            "--model_alias", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--n_threads", str(threads), "--n_threads_batch", str(threads),
            "--n_ctx", "2048", "--verbose", "False",
            # By default a new request cuts the running stream short: never in a benchmark.
            "--interrupt_requests", "False",
        ],
        file_bytes,
        "GGUF as stored",
        kv_bytes,
    )  # fmt: skip


def _llama_server(
    path: Path, file_bytes: int, threads: int, kv_bytes: int
) -> Server | tuple[str, str]:
    """llama.cpp's C++ server with continuous batching, from the ``xllamacpp`` wheel."""
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        return ("llama-server", "xllamacpp not installed (pip install xllamacpp: a binary wheel)")
    return Server(
        "llama-server",
        lambda port: [
            sys.executable, "-m", "benchmarks._sweep_llama_server", "--gguf", str(path),
            "--port", str(port), "--threads", str(threads),
            "--parallel", str(LLAMA_SERVER_SLOTS), "--alias", MODEL_NAME,
        ],
        file_bytes,
        "GGUF as stored",
        kv_bytes,
    )  # fmt: skip


def start(server: Server) -> int:
    """Start ``server`` (registered for stopping), wait until it answers, warm it up with one
    completion; return its port. Raises ``PeerNotReady`` when it does not come up."""
    return start_with_pid(server)[0]


def start_with_pid(server: Server) -> tuple[int, int]:
    """``start``, also returning the server's process id (its CPU time can be read)."""
    port = free_port()
    probe = _health("/v1/models" if server.name == "llama.cpp" else "/health")
    process = start_process(server.argv(port), port, probe, START_TIMEOUT_S)
    warm = drive(port, [Planned(0, 0.0, "warm up the server", 4)])
    if not warm[0].ok:
        raise PeerNotReady(f"warm-up request failed: {warm[0].error or 'no output'}")
    return port, process.pid


def process_cpu_s(pid: int) -> float:
    """CPU seconds every live thread of process ``pid`` has run (``/proc/PID/task/*/
    schedstat``, nanoseconds; Linux only)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def run_on(server: Server, work: Callable[[int], Any]) -> Any:
    """Start ``server`` fresh, run ``work(port)``, stop it whatever happens."""
    since = _processes.mark()
    try:
        return work(start(server))
    finally:
        _processes.stop_since(since)
