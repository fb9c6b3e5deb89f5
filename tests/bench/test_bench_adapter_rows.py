"""The adapter overhead rows (#20): each block's benchmark measures ``blocks API over
<engine>`` beside the engine's raw client, the raw client as the baseline, on one workload."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _adapters
from benchmarks.harness import Contender, Lifecycle, Result, Workload

ENGINES = {
    "blob": "S3",
    "kv": "redis",
    "counters": "redis",
    "ratelimit": "redis",
    "cache": "redis",
    "inference": "OpenAI",
    "sequencer": "redis",
    "pubsub": "nats-jetstream",
    "queue": "nats-jetstream",
}


@pytest.mark.parametrize("block", sorted(ENGINES))
def test_the_adapter_row_runs_beside_its_raw_client(
    block: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = importlib.import_module(f"benchmarks.{block}")
    runs: list[tuple[Workload, list[str], str]] = []

    def record(
        name: str, workload: Workload, contenders: list[Contender], baseline: str, out: str
    ) -> list[Any]:
        runs.append((workload, [c.name for c in contenders], baseline))
        return []

    monkeypatch.setattr(module, "run_overhead", record)
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(tmp_path))
    module.add_arguments(parser)
    assert module.main(parser.parse_args(["--adapter-overhead"])) == 0
    assert runs
    adapter = f"blocks API over {ENGINES[block]}"
    for workload, names, baseline in runs:
        assert adapter in names and baseline in names and baseline != adapter, names
        assert workload.lifecycle is Lifecycle.KEPT
        assert workload.rounds == _adapters.ROUNDS_DEFAULT


def test_the_overhead_line_reads_the_median_ratio_and_its_spread() -> None:
    raw = Result("put", "redis-py", throughput=100.0)
    adapter = Result(
        "put", "blocks API over redis", throughput=80.0, ratio=0.8, ratio_min=0.7, ratio_max=0.95
    )
    (line,) = _adapters.overhead_line([raw, adapter], "redis-py")
    assert "0.800 (rounds 0.700..0.950)" in line
    assert "overhead +25.0%, over the 10% goal" in line
