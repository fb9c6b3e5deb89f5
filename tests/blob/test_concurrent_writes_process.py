"""Concurrent PUTs of one key through every node of a real three-node cluster, with boto3
(#15: AWS's semantics). Threads, three per node, PUT the same key at once, for a few
rounds: every PUT is answered 200 (a PUT that met a newer change of its key in flight used
to get 409 BucketAlreadyOwnedByYou, which boto3 does not retry). Then every node serves the
same bytes, one of the bodies of the last round, with the ETag of those bytes. In a
versioned bucket every acknowledged version is listed, in the same order on every node,
newest first, and a GET without a version id returns the newest."""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("boto3")

from .process_cluster import Node, boto3_client, cluster_nodes, start_all, stop_all

pytestmark = pytest.mark.process

WRITERS_PER_NODE = 3
ROUNDS = 3
DEADLINE_S = 30.0  # convergence is a push away; generous for a loaded machine


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    started = cluster_nodes(tmp_path_factory.mktemp("race"), 3, ["--chunk-kib", "16", "--no-fsync"])
    try:
        start_all(started)
        yield started
    finally:
        stop_all(started)


def _race(nodes: list[Node], bucket: str, key: str, round_: int) -> dict[bytes, dict[str, Any]]:
    """One round: every writer PUTs its own body of ``key`` through its node at once;
    returns each body with the PUT's response (every one must be a 200)."""
    clients = [boto3_client(node.endpoint) for node in nodes for _ in range(WRITERS_PER_NODE)]
    bodies = [f"round {round_} writer {n} ".encode() * (1000 + 37 * n) for n in range(len(clients))]
    start = threading.Barrier(len(clients))
    answers: dict[bytes, dict[str, Any]] = {}
    failures: list[BaseException] = []

    def put(client: Any, body: bytes) -> None:
        start.wait()
        try:
            answers[body] = client.put_object(Bucket=bucket, Key=key, Body=body)
        except BaseException as error:
            failures.append(error)

    threads = [
        threading.Thread(target=put, args=pair) for pair in zip(clients, bodies, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[:3]  # the old answer: 409 BucketAlreadyOwnedByYou
    statuses = {answer["ResponseMetadata"]["HTTPStatusCode"] for answer in answers.values()}
    assert statuses == {200} and len(answers) == len(bodies)
    return answers


def _eventually(check: Callable[[], None], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            check()
            return
        except AssertionError as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {DEADLINE_S} s") from error
            time.sleep(0.1)


def _one_object_everywhere(readers: list[Any], answers: dict[bytes, dict[str, Any]]) -> None:
    """Every node serves the same bytes, written by one of ``answers``' PUTs, with their ETag."""
    read = [reader.get_object(Bucket="race", Key="k") for reader in readers]
    bodies = {bytes(answer["Body"].read()) for answer in read}
    assert len(bodies) == 1, f"{len(bodies)} different bodies across the nodes"
    (body,) = bodies
    assert body in answers, "a body no writer of the last round wrote"
    etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
    assert {answer["ETag"].strip('"') for answer in read} == {etag}


def test_concurrent_puts_through_every_node_all_succeed_and_converge(nodes: list[Node]) -> None:
    readers = [boto3_client(node.endpoint) for node in nodes]
    readers[0].create_bucket(Bucket="race")
    for round_ in range(ROUNDS):
        answers = _race(nodes, "race", "k", round_)
        check = functools.partial(_one_object_everywhere, readers, answers)
        _eventually(check, f"round {round_}: one object on every node")


def test_concurrent_puts_in_a_versioned_bucket_keep_every_version(nodes: list[Node]) -> None:
    readers = [boto3_client(node.endpoint) for node in nodes]
    readers[0].create_bucket(Bucket="race-versions")
    readers[0].put_bucket_versioning(
        Bucket="race-versions", VersioningConfiguration={"Status": "Enabled"}
    )
    bodies: dict[str, bytes] = {}
    for round_ in range(ROUNDS):
        answers = _race(nodes, "race-versions", "k", round_)
        bodies.update({answer["VersionId"]: body for body, answer in answers.items()})
    assert len(bodies) == ROUNDS * WRITERS_PER_NODE * len(nodes)  # every id distinct

    def listed_everywhere() -> None:
        listings = []
        for reader in readers:
            page = reader.list_object_versions(Bucket="race-versions", Prefix="k")
            versions = page["Versions"]
            assert not page["IsTruncated"]
            assert {v["VersionId"] for v in versions} == set(bodies)
            times = [v["LastModified"] for v in versions]
            assert times == sorted(times, reverse=True), "not newest first"
            assert [v["IsLatest"] for v in versions] == [True] + [False] * (len(versions) - 1)
            newest = versions[0]["VersionId"]
            current = reader.get_object(Bucket="race-versions", Key="k")
            assert current["VersionId"] == newest
            assert bytes(current["Body"].read()) == bodies[newest]
            listings.append([v["VersionId"] for v in versions])
        assert all(listing == listings[0] for listing in listings), "orders differ by node"

    _eventually(listed_everywhere, "every version listed on every node")
