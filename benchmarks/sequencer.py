"""Sequencer benchmark: IDs per second from one generator, against uuid4 and the layout limit.

Contenders (all in this process, on the system clock):

* ``uuid.uuid4`` (the baseline: what a user reaches for first);
* ``snowflake.next_id`` (one ID per call) and ``snowflake.next_ids(4096)`` (bulk);
* ``uuid7`` and ``ulid`` (ours, monotonic within a millisecond).

The default Snowflake layout allows 4,096 IDs per millisecond per worker, 4,096,000 per
second; ``limit.md`` compares the bulk path with that ceiling (the target is to reach it).
Needs nothing beyond the library: ``REQUIREMENTS`` is empty.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from benchmarks._adapters import (
    ADAPTER_ROW,
    add_overhead_arguments,
    overhead_workload,
    redis_contender,
    run_overhead,
)
from benchmarks.harness import Contender, Lifecycle, Workload, progress, run_benchmark, write_table
from blocks.sequencer.snowflake import Snowflake
from blocks.sequencer.timeids import UlidGenerator, Uuid7Generator

REQUIREMENTS: list[str] = []
LAYOUT_LIMIT_PER_S = 4_096_000
BULK = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer operations per round")
    add_overhead_arguments(parser)


def contenders() -> list[Contender]:
    return [
        Contender("uuid.uuid4", setup=lambda: None, op=lambda state, i: uuid.uuid4()),
        Contender("snowflake.next_id", setup=lambda: Snowflake(1), op=lambda g, i: g.next_id()),
        Contender(
            f"snowflake.next_ids({BULK})",
            setup=lambda: Snowflake(2),
            op=lambda g, i: g.next_ids(BULK),
            items_per_op=BULK,
        ),
        Contender("uuid7", setup=Uuid7Generator, op=lambda g, i: g.next_id()),
        Contender("ulid", setup=UlidGenerator, op=lambda g, i: g.next_id()),
    ]


def main(args: Any) -> int:
    if getattr(args, "adapter_overhead", False):
        return adapter_overhead(args)
    quick = getattr(args, "quick", False)
    ops = 20_000 if quick else 200_000
    single = [c for c in contenders() if "next_ids" not in c.name]
    results = run_benchmark(
        "sequencer",
        [Workload("ids", ops=ops, warmup_ops=1000, lifecycle=Lifecycle.KEPT)],
        single,
        baseline="uuid.uuid4",
        out_dir=args.out,
    )
    # One bulk op is 4,096 IDs (a full millisecond), so it gets its own, shorter workload.
    bulk = run_benchmark(
        "sequencer-bulk",
        [Workload("ids-bulk", ops=200 if quick else 2000, warmup_ops=10, lifecycle=Lifecycle.KEPT)],
        [c for c in contenders() if c.name in ("uuid.uuid4", f"snowflake.next_ids({BULK})")],
        baseline="uuid.uuid4",
        out_dir=args.out,
    )
    rows = []
    for result in [*results, *bulk]:
        if result.skipped is None and result.contender.startswith("snowflake"):
            share = result.throughput / LAYOUT_LIMIT_PER_S
            rows.append(
                [result.workload, result.contender, f"{result.throughput:,.0f}", f"{share:.0%}"]
            )
    table = write_table(
        f"{args.out}/sequencer", "limit", ["workload", "contender", "IDs/s", "of 4,096,000/s"], rows
    )
    progress(f"\n## sequencer vs layout limit\n\n{table}")
    print(table)
    return 0


# -- the Redis adapter (#20): RedisSnowflake beside a ticket counter in Redis ------------------


def _raw_ticket(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def _adapter_snowflake(url: str) -> Any:
    from blocks.sequencer.adapters.redis import RedisSnowflake

    return RedisSnowflake.open(url, "bench")


def adapter_overhead(args: Any) -> int:
    """One ID per call: redis-py ``INCR`` of one key (the ID generator a user writes on
    Redis by hand: a round trip per ID) against ``RedisSnowflake.next_id`` (a leased worker
    id; a round trip only to renew the lease)."""
    run_overhead(
        "sequencer-adapter-next-id",
        overhead_workload("next-id", args),
        [
            redis_contender("redis-py INCR", _raw_ticket, lambda c, i: c.incr("ticket")),
            redis_contender(
                ADAPTER_ROW.format(engine="redis"), _adapter_snowflake, lambda g, i: g.next_id()
            ),
        ],
        "redis-py INCR",
        getattr(args, "out", "results"),
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="results")
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
