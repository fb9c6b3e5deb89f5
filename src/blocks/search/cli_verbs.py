"""The client verbs of ``blocks search``: ``index``, ``add``, ``query``, ``suggest``, ``info``.

Each takes the parsed arguments (``blocks.search.cli`` declares them), talks to one node
through a ``SearchClient`` and prints the result (``--json`` or text); bad input is
``InvalidArgument`` (an ``error:`` line and exit code 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from blocks.cli import print_result
from blocks.core.errors import InvalidArgument

__all__ = ["add", "index", "info", "query", "suggest"]


def _progress(done: int, total: int, started: float) -> None:
    rate = done / max(1e-9, time.monotonic() - started)
    print(
        f"indexed {done}/{total} ({100 * done // max(1, total)}%, {rate:,.0f}/s)", file=sys.stderr
    )


def index(args: argparse.Namespace) -> int:
    from blocks.search.client import SearchClient

    if args.batch_size < 1:
        raise InvalidArgument("--batch-size must be >= 1")
    started = time.monotonic()
    try:
        with SearchClient(args.address, token=args.token) as client:
            if args.vectors is not None:
                import numpy as np

                data = np.load(args.vectors, allow_pickle=False, mmap_mode="r")
                attributes = _read_attributes(args.attributes, len(data))
                if args.train:
                    client.train(np.asarray(data[: min(len(data), 100_000)]))
                for start in range(0, len(data), args.batch_size):
                    stop = min(len(data), start + args.batch_size)
                    ids = np.arange(args.first_id + start, args.first_id + stop)
                    client.add(ids, np.asarray(data[start:stop]), attributes[start:stop])
                    _progress(stop, len(data), started)
                count = len(data)
            else:
                documents = _read_documents(args.texts)
                for start in range(0, len(documents), args.batch_size):
                    client.index_documents(documents[start : start + args.batch_size])
                    _progress(min(len(documents), start + args.batch_size), len(documents), started)
                count = len(documents)
            info = client.info()
    except ValueError as error:
        if isinstance(error, InvalidArgument):
            raise
        raise InvalidArgument(f"cannot read input: {error}") from None
    result = {"indexed": count, "seconds": round(time.monotonic() - started, 3), **info}
    node = ", ".join(f"{key}={value}" for key, value in info.items())
    print_result(result, as_json=args.json, text=f"indexed {count}; node now {node}")
    return 0


def _read_attributes(path: str | None, count: int) -> list[Any]:
    """``--attributes``: one JSON object per line, one line per vector (none: ``[]``)."""
    if path is None:
        return []
    import json

    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    if len(rows) != count:
        raise InvalidArgument(f"--attributes has {len(rows)} lines for {count} vectors")
    return rows


def add(args: argparse.Namespace) -> int:
    from blocks.search.client import SearchClient
    from blocks.search.where import parse_attribute

    attributes = dict(parse_attribute(flag) for flag in args.attr)
    vector = _parse_vector(args.vector)
    with SearchClient(args.address, token=args.token) as client:
        client.add([args.id], [vector], [attributes])
        size = len(client)
    result = {"id": args.id, "attributes": attributes, "vectors": size}
    print_result(result, as_json=args.json, text=f"added {args.id}; node now holds {size}")
    return 0


def _parse_vector(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",")]
    except ValueError as error:
        raise InvalidArgument(f"bad --vector: {error}") from None


def _read_documents(path: str) -> list[tuple[str, str]]:
    documents: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            doc_id, tab, text = line.partition("\t")
            documents.append((doc_id, text) if tab else (str(number), line))
    return documents


def query(args: argparse.Namespace) -> int:
    from blocks.search.client import SearchClient

    if args.text is not None and args.where is not None:
        raise InvalidArgument("--where filters vector queries (--vector), not text")
    with SearchClient(args.address, token=args.token) as client:
        if args.text is not None:
            found = client.search_text_partial(
                args.text, args.k, args.mode, allow_partial=args.allow_partial
            )
            if found.partial:
                missing = ", ".join(found.missing_shard_names)
                print(f"partial answer: shards {missing} are missing", file=sys.stderr)
            hits = found.hits
            text = "\n".join(f"{h['score']:.4f}  {h['id']}  {h['text']}" for h in hits)
            print_result(hits, as_json=args.json, text=text or "(no hits)")
            return 0
        queries = [_parse_vector(row) for row in args.vector]
        result = client.search(
            queries,
            args.k,
            nprobe=args.nprobe,
            ef_search=args.ef_search,
            allow_partial=args.allow_partial,
            where=args.where,
        )
    if result.partial:
        missing = ", ".join(result.missing_shard_names)
        print(f"partial answer: shards {missing} are missing", file=sys.stderr)
    rows = [
        {"ids": ids, "distances": dist}
        for ids, dist in zip(result.ids.tolist(), result.distances.tolist(), strict=True)
    ]
    text = "\n".join(
        "  ".join(f"{i}:{d:.4f}" for i, d in zip(r["ids"], r["distances"], strict=True) if i >= 0)
        for r in rows
    )
    print_result(rows, as_json=args.json, text=text)
    return 0


def suggest(args: argparse.Namespace) -> int:
    from blocks.search.client import SearchClient

    with SearchClient(args.address, token=args.token) as client:
        found = client.suggest(args.prefix, args.k)
    text = "\n".join(f"{count:>6}  {phrase}" for phrase, count in found)
    print_result([list(item) for item in found], as_json=args.json, text=text or "(none)")
    return 0


def info(args: argparse.Namespace) -> int:
    from blocks.search.client import SearchClient

    with SearchClient(args.address, token=args.token) as client:
        info = client.info()
    print_result(info, as_json=args.json)  # aligned key  value lines
    return 0
