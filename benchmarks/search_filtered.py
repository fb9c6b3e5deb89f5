"""Filtered vector search through the service: what a ``where`` costs, against no filter.

One search node in this process (``SearchNode`` behind its gRPC server on an event-loop
thread), a ``SearchClient`` calling it: ``N`` vectors of dimension 64 (L2), each with a
``bucket`` attribute (an int in 0..99) and a ``tag`` string. Variants, one query of ``k=10``
per call:

* ``none``: no filter;
* ``eq 50% / 10% / 1%``: ``{"bucket": {"$lt": b}}`` as a range, and ``{"tag": ...}`` equality;
* ``not 90%``: ``{"tag": {"$ne": ...}}``, a complement (the node's predicate path);
* ``ids 10%``: the old way, the same 10% sent as an allow-list of ids in every request.

Every variant runs ``--calls`` calls per round, the variants interleaved round by round
(``--rounds``); each variant's number is the median over rounds of its round medians, and its
ratio to ``none`` is taken round by round. Kinds: ``exact`` (torch) and ``faiss IVF256,Flat``
with ``nprobe`` 8 (its filtered rows widened when short). The load average before and after
goes with the numbers: on a shared machine they are indicative only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM, K = 64, 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the node")
    parser.add_argument("--calls", type=int, default=40, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kinds", default="exact,faiss", help="exact, faiss or both")
    parser.add_argument("--seed", type=int, default=0)


def _variants(n: int) -> dict[str, dict[str, Any]]:
    return {
        "none": {},
        "eq 50%": {"where": {"bucket": {"$lt": 50}}},
        "eq 10%": {"where": {"tag": "t1"}},
        "eq 1%": {"where": {"bucket": 7}},
        "not 90%": {"where": {"tag": {"$ne": "t1"}}},
        "ids 10%": {"filter": np.flatnonzero(np.arange(n) % 10 == 1)},
    }


def _node(kind: str, vectors: np.ndarray) -> Any:
    from blocks.search.exact import ExactIndex
    from blocks.search.faiss_index import FaissIndex
    from blocks.search.node import SearchNode

    if kind == "exact":
        return SearchNode(ExactIndex(DIM, "l2"))
    index = FaissIndex(DIM, "IVF256,Flat", "l2", nprobe=8)
    index.train(vectors[: min(len(vectors), 50_000)])
    return SearchNode(index, kind="faiss")


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from blocks.search.client import SearchClient
    from blocks.search.service import build_server

    rng = np.random.default_rng(args.seed)
    vectors = rng.normal(size=(args.n, DIM)).astype(np.float32)
    queries = rng.normal(size=(args.calls, 1, DIM)).astype(np.float32)
    ids = np.arange(args.n)
    rows = [{"bucket": int(i % 100), "tag": f"t{i % 10}"} for i in range(args.n)]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, _ = build_server(_node(kind, vectors))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(120)
    client = SearchClient(server.address, timeout_s=120)
    variants = _variants(args.n)
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for start in range(0, args.n, 10_000):
            stop = min(args.n, start + 10_000)
            client.add(ids[start:stop], vectors[start:stop], rows[start:stop])
        for options in variants.values():  # warm-up, and every answer is complete
            assert (client.search(queries[0], K, **options).ids >= 0).all()
        for _ in range(args.rounds):
            for name, options in variants.items():
                times = []
                for query in queries:
                    began = time.perf_counter()
                    client.search(query, K, **options)
                    times.append(time.perf_counter() - began)
                rounds[name].append(statistics.median(times))
    finally:
        client.close()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
    base = rounds["none"]
    return {
        name: {
            "median_ms": statistics.median(values) * 1e3,
            "x_none": statistics.median(v / b for v, b in zip(values, base, strict=True)),
        }
        for name, values in rounds.items()
    }


def main(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()
    results = {kind: measure(kind, args) for kind in str(args.kinds).split(",")}
    load_after = os.getloadavg()
    out = Path(getattr(args, "out", "results")) / "search_filtered"
    out.mkdir(parents=True, exist_ok=True)
    report = {"n": args.n, "dim": DIM, "k": K, "results": results}
    report |= {"load_before": load_before, "load_after": load_after}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"load before {load_before}, after {load_after} (numbers are indicative)")
    for kind, table in results.items():
        print(f"{kind}, {args.n:,} x {DIM}, one query, k={K}, through gRPC:")
        for name, row in table.items():
            print(f"  {name:<8} {row['median_ms']:8.3f} ms  x{row['x_none']:.2f} of none")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results", help="results directory")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
