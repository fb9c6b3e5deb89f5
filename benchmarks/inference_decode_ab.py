"""``blocks bench inference_decode_ab``: a lone decode token of this tree against another
tree's, in one run, by the decoding thread's CPU time.

Theory of operation. The HTTP sweep (``inference_sweep --batch1-only``) times a whole server
by the wall clock or by its process's CPU time, two requests a round; on this shared 2-core
machine its rounds spread far wider than a change to the decode path moves them (the same
code against itself gave 35-110% of the read roofline at load 8, docs/inference.md). This
benchmark keeps only the decode: each tree's model is loaded in a child process of its own
(``PYTHONPATH`` its ``src``, so each runs all of its own code), its KV cache filled with
``--context`` positions of random keys and values, and each round asks both children, in an
order that alternates, to decode ``--tokens`` tokens at that position through
``LlamaForCausalLM.decode_one`` and numpy's argmax (the engine's greedy pick), timed by the
decoding thread's CPU time. The parent reads the sweep's read probe (CPU time) each round,
so each time is also a fraction of the read roofline: the model's tensors at 4 bytes an
element (the tied embedding once, as the head reads it) plus the KV of the context, as the
sweep counts them. The children run one torch thread each, one at a time. What it leaves
out: the engine, the scheduler and HTTP (~1 ms a token together, docs/inference.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._report import progress, write_table
from benchmarks._stats import min_median_max

__all__ = ["add_arguments", "main"]

BUFFER_MIB = 512  # the read probe's buffer, as the sweep's
FIRST_TOKEN = 100  # decoded token ids cycle from here
WARM_UP_TOKENS = 4  # decoded before the first round, untimed
CHILD_EXIT_S = 30.0  # how long a child may take to end once told to
THIS = "this tree"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--before-src", required=True, help="the src directory of the tree to compare against"
    )
    parser.add_argument("--model", default="smollm2", help="smollm2 or a .gguf (load_model)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=16, help="decoded tokens per round")
    parser.add_argument("--context", type=int, default=80, help="positions already cached")
    parser.add_argument(
        "--split",
        action="store_true",
        help="also time every weight product (one thread's einsum) and report the rest of a "
        "token, which the products' share of the noise no longer hides",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


# --- the child: one tree's model, decoding on request ---------------------------------------


def _time_products(spent: list[int]) -> None:
    """Make the numpy path's every weight product (the layers' and the head's) an ``einsum``
    loop, as on one thread, that adds its thread CPU nanoseconds to ``spent[0]``: both trees
    pick their product through ``row_decode.product_for`` (model.py imports the name)."""
    import numpy as np

    from blocks.inference import model, row_decode

    clock = time.thread_time_ns

    def timed(x: Any, w: Any, out: Any) -> Any:
        started = clock()
        result = np.einsum("i,ij->j", x, w, out=out)
        spent[0] += clock() - started
        return result

    for module in (row_decode, model):
        setattr(module, "product_for", lambda blas: timed)  # noqa: B010


def _child(model_name: str, context: int, split: bool) -> int:
    """Load the model, fill its cache, print its bytes a token; then for each line ``N`` of
    stdin decode ``N`` tokens at position ``context`` and print the CPU seconds they took
    (and, with ``split``, those of the weight products), and the last token picked (the
    trees must agree on it)."""
    import numpy as np
    import torch

    import blocks
    from blocks.inference.loader import load_model

    torch.set_num_threads(1)
    spent = [0]
    if split:
        _time_products(spent)
    model, _ = load_model(model_name)
    cfg = model.config
    kv_cache = model.new_kv_cache(context + 1)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        kv_cache[:, :context] = torch.randn(kv_cache[:, :context].shape, generator=generator)
    weights = sum(p.numel() for p in model.parameters()) * 4
    per_position = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * 4
    key_slots = slice(0, context + 1)

    def decode(count: int) -> int:
        picked = -1
        with torch.inference_mode():
            for i in range(count):
                logits = model.decode_one(FIRST_TOKEN + i, context, context, key_slots, kv_cache)
                assert logits is not None, "the numpy decode path does not apply"
                picked = int(np.argmax(logits[0].numpy()))
        return picked

    decode(WARM_UP_TOKENS)  # packs the weights and builds the head's blocks
    ready = {"bytes": weights + per_position * (context + 1), "blocks": blocks.__file__}
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        spent[0] = 0
        started = time.thread_time()
        picked = decode(int(line))
        took = {"cpu_s": time.thread_time() - started, "product_s": spent[0] / 1e9}
        print(json.dumps({**took, "token": picked}), flush=True)
    return 0


# --- the parent: rounds, alternating -------------------------------------------------------


def _start(src: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "benchmarks.inference_decode_ab", "--child"]
    command += ["--before-src", str(src), "--model", args.model, "--context", str(args.context)]
    command += ["--split"] if args.split else []
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen(
        command, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _ask(child: subprocess.Popen[str], line: str | None) -> dict[str, Any]:
    stdin, stdout = child.stdin, child.stdout
    assert stdin is not None and stdout is not None
    if line is not None:
        stdin.write(line + "\n")
        stdin.flush()
    answer = stdout.readline()
    if not answer:
        raise RuntimeError(f"decode child exited with {child.wait()}")
    reply: dict[str, Any] = json.loads(answer)
    return reply


def _stop(child: subprocess.Popen[str]) -> None:
    """End a child: its stdin closed ends its loop; killed if it has not ended in 30 s."""
    if child.stdin is not None:
        child.stdin.close()
    try:
        child.wait(timeout=CHILD_EXIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@dataclass(slots=True)
class _Rounds:
    """What the rounds measured, per tree (``this tree``, ``before``), in round order."""

    rows: list[list[str]] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # before's ms a token / this tree's
    fractions: dict[str, list[float]] = field(default_factory=dict)  # of the read roofline
    rest_ms: dict[str, list[float]] = field(default_factory=dict)  # --split: not products


def _round(
    number: int, children: dict[str, subprocess.Popen[str]], per_token: dict[str, int],
    args: argparse.Namespace, rounds: _Rounds,
) -> None:  # fmt: skip
    """One round: the read probe, then each child's ``args.tokens`` (the order alternates)."""
    from benchmarks.inference_sweep import read_bandwidth_gb_s  # the parent's only

    read_gb_s = read_bandwidth_gb_s(BUFFER_MIB, cpu_time=True)
    names = list(children) if number % 2 == 0 else list(reversed(children))
    replies = {name: _ask(children[name], str(args.tokens)) for name in names}
    ms = {name: 1e3 * reply["cpu_s"] / args.tokens for name, reply in replies.items()}
    for name, reply in replies.items():
        roofline_ms = 1e3 * per_token[name] / (read_gb_s * 1e9)
        rounds.fractions.setdefault(name, []).append(roofline_ms / ms[name])
        rest = 1e3 * (reply["cpu_s"] - reply["product_s"]) / args.tokens
        rounds.rest_ms.setdefault(name, []).append(rest)
    rounds.ratios.append(ms["before"] / ms[THIS])
    same = replies[THIS]["token"] == replies["before"]["token"]
    rounds.rows.append(
        [
            str(number + 1),
            f"{read_gb_s:.1f}",
            *(f"{ms[name]:.2f}" for name in (THIS, "before")),
            *(f"{100 * rounds.fractions[name][-1]:.0f}%" for name in (THIS, "before")),
            f"x{rounds.ratios[-1]:.3f}",
            *(f"{rounds.rest_ms[name][-1]:.2f}" for name in (THIS, "before") if args.split),
            "same" if same else "DIFFERENT",
            f"{os.getloadavg()[0]:.1f}",
        ]
    )
    progress(f"inference_decode_ab: {' | '.join(rounds.rows[-1])}")


def main(args: argparse.Namespace) -> int:
    if args.child:
        return _child(args.model, args.context, args.split)
    sources = {THIS: Path(__file__).resolve().parents[1] / "src"}
    sources["before"] = Path(args.before_src).resolve()
    children = {name: _start(src, args) for name, src in sources.items()}
    rounds = _Rounds()
    try:
        ready = {name: _ask(child, None) for name, child in children.items()}
        for name, src in sources.items():  # each child must run its own tree's code
            if not Path(ready[name]["blocks"]).resolve().is_relative_to(src):
                raise RuntimeError(f"{name} imported {ready[name]['blocks']}, not from {src}")
        per_token = {name: ready[name]["bytes"] for name in sources}
        for number in range(args.rounds):
            _round(number, children, per_token, args, rounds)
    finally:
        for child in children.values():
            _stop(child)
    columns = [
        "round", "read GB/s", "ms/token this tree", "ms/token before", "fraction this tree",
        "fraction before", "speed-up (before/this)",
    ]  # fmt: skip
    if args.split:
        columns += ["ms/token not products, this tree", "ms/token not products, before"]
    columns += ["last token", "load (1 min)"]
    print(write_table(args.out, "decode_ab", columns, rounds.rows))
    _summarise(rounds, args.split)
    return 0


def _summarise(rounds: _Rounds, split: bool) -> None:
    low, middle, high = min_median_max(rounds.ratios)
    faster = sum(r > 1 for r in rounds.ratios)
    print(
        f"inference_decode_ab: this tree / before, per round: median x{middle:.3f} "
        f"(x{low:.3f}-x{high:.3f}), faster in {faster} of {len(rounds.ratios)} rounds"
    )
    for name, values in rounds.fractions.items():
        low, middle, high = (100 * v for v in min_median_max(values))
        print(
            f"inference_decode_ab: {name}: {low:.0f}% / {middle:.0f}% / {high:.0f}% "
            "(min / median / max) of the read roofline, CPU time"
        )
    if split:
        saved = [b - t for t, b in zip(rounds.rest_ms[THIS], rounds.rest_ms["before"], strict=True)]
        low, middle, high = min_median_max(saved)
        print(
            f"inference_decode_ab: outside the weight products this tree spends {middle:.3f} "
            f"ms a token less than before at the median ({low:.3f} to {high:.3f}), less in "
            f"{sum(d > 0 for d in saved)} of {len(saved)} rounds"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--out", default="bench-results/inference_decode_ab")
    sys.exit(main(parser.parse_args()))
