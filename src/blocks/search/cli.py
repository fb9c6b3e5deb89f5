"""``blocks search serve | index | add | query | suggest | info``.

``serve`` runs a node (vector index + BM25 documents + typeahead, optional MiniLM embeddings);
``rebalance`` moves what a changed ``--remote-shards`` list places elsewhere;
``index`` streams vectors (``.npy``) or documents (a text file, one per line, optionally
``id<TAB>text``) to a node in batches and shows progress on stderr; ``add`` stores one vector
with attributes (``--attr KEY=VALUE``); ``query`` searches by vector (``--where`` filters on
attributes, JSON as in ``blocks.search.where``) or by text; ``suggest`` completes a prefix;
``info`` describes a node. The client verbs' bodies are in ``blocks.search.cli_verbs``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from blocks.cli import DEFAULT_PORTS, add_server_arguments, announce, print_result, server_options
from blocks.core.errors import InvalidArgument
from blocks.search import cli_verbs

__all__ = ["DEFAULT_ADDRESS", "register"]

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['search']}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("search", help="vector search, BM25 text search, typeahead")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    serve = verbs.add_parser("serve", help="run a search node")
    serve.add_argument("--dim", type=int, default=384, help="vector dimension")
    serve.add_argument("--metric", default="cosine", choices=["l2", "ip", "cosine"])
    serve.add_argument(
        "--kind",
        default="exact",
        choices=["exact", "faiss", "shared-ivf"],
        help="shared-ivf: a shard of one IVF over all shards (--spec IVF<nlist>; its "
        "coordinator trains the centroids and picks each query's lists)",
    )
    serve.add_argument(
        "--spec", default="HNSW32", help="faiss factory string (--kind faiss), IVF<nlist>"
    )
    serve.add_argument("--shards", type=int, default=1, help="local shards of the vector index")
    serve.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the vector index (and --embed's model) runs; cuda without a GPU is an error",
    )
    serve.add_argument("--embed", action="store_true", help="embed documents with MiniLM")
    serve.add_argument(
        "--remote-shards",
        default=None,
        help="coordinate shard nodes: [NAME=]HOST:PORT per shard, comma-separated; "
        "replicas joined by +",
    )
    serve.add_argument(
        "--deadline-ms",
        type=int,
        default=5_000,
        help="coordinator: longest a search waits for shards (a caller's shorter deadline wins)",
    )
    serve.add_argument(
        "--hedge-ms",
        type=int,
        default=None,
        help="coordinator: ask a second replica after this many ms (default: p95 of recent calls)",
    )
    serve.add_argument(
        "--coarse-threads",
        type=int,
        default=None,
        help="coordinator over shared-ivf shards: threads a search's coarse search splits its "
        "rows over (default 2)",
    )
    serve.add_argument(
        "--pipeline-rows",
        type=int,
        default=None,
        help="coordinator: a larger query batch goes to the shards in chunks of this many rows "
        "(default 256)",
    )
    serve.add_argument(
        "--pipeline-depth",
        type=int,
        default=None,
        help="coordinator: chunks of one batch in flight at once (default 1: every batch "
        "whole; more overlap the coordinator's work with the shards' scans)",
    )
    serve.add_argument(
        "--data-path",
        action="store_true",
        help="shard: also serve vector searches on a plaintext TCP data port that a "
        "coordinator then uses instead of gRPC (less CPU a call; not with TLS)",
    )
    serve.add_argument(
        "--checkpoint-records",
        type=int,
        default=10_000,
        help="snapshot after this many logged mutations (--data-dir)",
    )
    add_server_arguments(
        serve,
        block="search",
        data_dir="optional",
        data_dir_help="load from and save to it (a coordinator: its typeahead counts only)",
    )
    serve.set_defaults(func=_serve)

    index = verbs.add_parser("index", help="send vectors or documents to a node")
    _client_arguments(index)
    source = index.add_mutually_exclusive_group(required=True)
    source.add_argument("--vectors", help=".npy file of float vectors (n, dim)")
    source.add_argument("--texts", help="text file: one document per line, or id<TAB>text")
    index.add_argument("--first-id", type=int, default=0, help="id of the first vector")
    index.add_argument("--batch-size", type=int, default=10_000)
    index.add_argument("--train", action="store_true", help="train the index on the vectors first")
    index.add_argument(
        "--attributes", help="with --vectors: JSON Lines, one object of attributes per vector"
    )
    index.set_defaults(func=cli_verbs.index)

    add = verbs.add_parser("add", help="store one vector with attributes")
    _client_arguments(add)
    add.add_argument("--id", type=int, required=True)
    add.add_argument("--vector", required=True, help="comma-separated floats")
    add.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='an attribute (repeatable); VALUE is a JSON number, true/false or "string", '
        "else text: color=red size=3 price=2.5 ok=true",
    )
    add.set_defaults(func=cli_verbs.add)

    query = verbs.add_parser("query", help="search a node by vector or by text")
    _client_arguments(query)
    what = query.add_mutually_exclusive_group(required=True)
    what.add_argument("--vector", action="append", help="comma-separated floats (repeatable)")
    what.add_argument("--text", help="a text query")
    query.add_argument("-k", type=int, default=10)
    query.add_argument("--mode", default="bm25", choices=["bm25", "semantic", "hybrid"])
    query.add_argument("--nprobe", type=int, default=None)
    query.add_argument("--ef-search", type=int, default=None)
    query.add_argument(
        "--where",
        default=None,
        help='vectors only: a JSON filter on attributes, e.g. \'{"color": "red", '
        '"price": {"$lte": 5}}\' ($eq $ne $in $nin $gt $gte $lt $lte $and $or $not)',
    )
    query.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept a coordinator's answer without missing shards (named on stderr)",
    )
    query.set_defaults(func=cli_verbs.query)

    suggest = verbs.add_parser("suggest", help="typeahead completions of a prefix")
    _client_arguments(suggest)
    suggest.add_argument("prefix")
    suggest.add_argument("-k", type=int, default=10)
    suggest.set_defaults(func=cli_verbs.suggest)

    rebalance = verbs.add_parser(
        "rebalance", help="move vectors and documents to the shards a new shard list names"
    )
    rebalance.add_argument("--from-shards", required=True, help="the old --remote-shards list")
    rebalance.add_argument("--to-shards", required=True, help="the new --remote-shards list")
    rebalance.add_argument("--page-rows", type=int, default=1_024, help="ids per copied page")
    rebalance.add_argument("--token", default=None)
    rebalance.add_argument("--json", action="store_true")
    rebalance.set_defaults(func=_rebalance)

    info = verbs.add_parser("info", help="describe a node")
    _client_arguments(info)
    info.set_defaults(func=cli_verbs.info)


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=DEFAULT_ADDRESS)
    parser.add_argument("--token", default=None)
    parser.add_argument("--json", action="store_true")


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from blocks.search.service import SearchNode, build_server, make_vector_index

    if args.device == "cuda":
        _check_cuda(args.kind, coordinator=bool(args.remote_shards))
    options = server_options(args)  # checks the ports before the slow parts load
    if args.data_path and (args.remote_shards or options.core_tls() is not None):
        raise InvalidArgument("--data-path is for a shard without TLS (it is plaintext TCP)")

    async def main() -> None:
        if args.remote_shards:
            from blocks.search.coordinator import connect_shards

            if args.embed:
                raise InvalidArgument("a coordinator embeds nothing: start the shards with --embed")
            tuning = {  # the coordinator options given; the rest keep their defaults
                name: value
                for name, value in (
                    ("pipeline_rows", args.pipeline_rows),
                    ("pipeline_depth", args.pipeline_depth),
                    ("coarse_threads", args.coarse_threads),
                )
                if value is not None
            }
            vectors: Any = await asyncio.to_thread(
                connect_shards,
                args.remote_shards,
                token=options.token,
                deadline_ms=args.deadline_ms,
                hedge_ms=args.hedge_ms,
                **tuning,
            )
            args.kind = "coordinator"
            if vectors.nlist:  # its faiss searches are coarse searches of pipelined chunks
                from blocks.search.coarse import prefer_blas

                prefer_blas(vectors.dim)
        else:
            vectors = make_vector_index(
                args.dim,
                args.metric,
                kind=args.kind,
                spec=args.spec,
                shards=args.shards,
                device=args.device,
            )
        embedder = None
        if args.embed:
            from blocks.search.embed import MiniLMEmbedder

            print("loading the MiniLM embedder...", file=sys.stderr, flush=True)
            embedder = MiniLMEmbedder(device=args.device)
        if args.remote_shards:
            from blocks.search.coordinator_node import CoordinatorNode

            node: SearchNode = CoordinatorNode(
                vectors, data_dir=options.data_dir, checkpoint_records=args.checkpoint_records
            )
        else:
            node = SearchNode(
                vectors,
                kind=args.kind,
                embedder=embedder,
                data_dir=options.data_dir,
                checkpoint_records=args.checkpoint_records,
            )
        server, _service = build_server(
            node,
            host=options.host,
            port=options.port,
            token=options.token,
            data_path=args.data_path,
        )
        options.configure(server)
        if options.data_dir is not None:
            print(f"loading the index from {options.data_dir}...", file=sys.stderr, flush=True)
        await server.start()
        announce(
            options,
            f"search node serving on {server.address} ({args.kind}, dim={vectors.dim})",
            address=server.address,
            metrics_port=server.metrics_port,
            dim=vectors.dim,
            metric=str(vectors.metric),
        )
        await server.serve_until_signalled()

    uvloop.run(main())
    return 0


def _check_cuda(kind: str, *, coordinator: bool) -> None:
    """Refuse ``--device cuda`` at start-up where it cannot run (no silent CPU fallback)."""
    if coordinator:
        raise InvalidArgument("a coordinator holds no index: start the shards with --device cuda")
    from blocks.search.exact import resolve_device

    resolve_device("cuda")  # raises InvalidArgument when torch sees no CUDA device
    if kind == "faiss":
        from blocks.search.faiss_index import faiss_has_gpu

        if not faiss_has_gpu():
            raise InvalidArgument("device 'cuda' requested but this faiss has no GPU support")


def _rebalance(args: argparse.Namespace) -> int:
    from blocks.search.rebalance import Step, rebalance

    def progress(step: Step) -> None:
        if step.phase == "deleted":
            print(f"moved {step.count} {step.kind} {step.source} -> {step.target}", file=sys.stderr)

    report = rebalance(
        args.from_shards,
        args.to_shards,
        token=args.token,
        page_rows=args.page_rows,
        on_step=progress,
    ).as_dict()
    moved = sum(report["vectors"].values()), sum(report["documents"].values())
    text = f"moved {moved[0]} vectors and {moved[1]} documents ({report['pages']} pages)"
    print_result(report, as_json=args.json, text=text)
    return 0
