"""A/B timing of a blob cluster's peer traffic: two three-node ``blocks blob serve`` clusters
(rs 4+2, replicated metadata, fsync on), one running the tree given as ``--before`` (a
PYTHONPATH), one running this tree (its peers over HTTP, or with ``--after-peers tcp`` on
``TcpTransport``), measured in alternating blocks on the same machine.

Each block, through node 0 of one cluster: PUTs of 4 KiB (metadata pushes and one shard
write per node), PUTs of 1 MiB (shard writes of 256 KiB), GETs of the 1 MiB objects (shard
reads from the peers). Prints the median latency per block and, per kind of call, the
median of the after/before ratios of paired blocks with its range.

    .venv/bin/python tests/blob/ab_peer_protocol.py --before /tmp/before/src --blocks 10
    .venv/bin/python tests/blob/ab_peer_protocol.py --before /tmp/before/src --after-peers tcp

Not a test (no ``test_`` prefix): timings are noise on a loaded machine, so nothing is
asserted; the machine's load is printed with the result.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.blob.process_cluster import (
    boto3_client,
    cluster_nodes,
    start_all,
    stop_all,
    tcp_cluster_nodes,
)

KINDS = ("put-4k", "put-1m", "get-1m")


def _client(endpoint: str) -> Any:
    return boto3_client(endpoint)


def _timed(call: Callable[[], object], count: int) -> float:
    """Median seconds of ``count`` calls."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _block(client: Any, block: int, count: int) -> dict[str, float]:
    small, large = os.urandom(4096), os.urandom(1024 * 1024)
    keys = iter(range(10**6))

    def put(body: bytes) -> Callable[[], object]:
        return lambda: client.put_object(Bucket="ab-bench", Key=f"{block}-{next(keys)}", Body=body)

    client.put_object(Bucket="ab-bench", Key=f"big-{block}", Body=large)
    return {
        "put-4k": _timed(put(small), count),
        "put-1m": _timed(put(large), count // 4 or 1),
        "get-1m": _timed(
            lambda: client.get_object(Bucket="ab-bench", Key=f"big-{block}")["Body"].read(),
            count // 4 or 1,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="PYTHONPATH of the tree to compare with")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--count", type=int, default=40, help="calls of 4 KiB per block")
    parser.add_argument(
        "--after-peers",
        choices=("http", "tcp"),
        default="http",
        help="this tree's cluster carries peer traffic over HTTP or on TCP (--peer-listen)",
    )
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parents[2] / "src")
    with tempfile.TemporaryDirectory() as root:
        trees = {"before": args.before, "after": here}
        clusters = {
            "before": cluster_nodes(Path(root) / "b", 3, env={"PYTHONPATH": args.before}),
            "after": (tcp_cluster_nodes if args.after_peers == "tcp" else cluster_nodes)(
                Path(root) / "a", 3, env={"PYTHONPATH": here}
            ),
        }
        try:
            for nodes in clusters.values():
                start_all(nodes)
            clients = {name: _client(nodes[0].endpoint) for name, nodes in clusters.items()}
            for client in clients.values():
                client.create_bucket(Bucket="ab-bench")
            results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for block in range(args.blocks):
                order = ("before", "after") if block % 2 == 0 else ("after", "before")
                for name in order:
                    results[name].append(_block(clients[name], block, args.count))
                line = "  ".join(
                    f"{kind} {results['before'][-1][kind] * 1e3:.2f}->"
                    f"{results['after'][-1][kind] * 1e3:.2f} ms"
                    for kind in KINDS
                )
                print(f"block {block}: {line}", flush=True)
        finally:
            for nodes in clusters.values():
                stop_all(nodes)
    for kind in KINDS:
        ratios = sorted(
            after[kind] / before[kind]
            for before, after in zip(results["before"], results["after"], strict=True)
        )
        print(
            f"{kind}: after/before median x{statistics.median(ratios):.2f} "
            f"(x{ratios[0]:.2f}-x{ratios[-1]:.2f}), load {os.getloadavg()}"
        )


if __name__ == "__main__":
    main()
