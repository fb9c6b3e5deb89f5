"""The aws CLI, unchanged, against a ``blocks blob serve`` process (#15, "Real clients").

Configured by environment and files in the test's temporary directory only (never the
user's ``~/.aws``): keys, region, path-style addressing, one attempt per request so that a
wrong answer fails instead of being retried away. Commands run through the CLI's entry point
in one helper process (``awscli_runner.py``: an ``aws`` start costs two seconds here); the
presign test runs the ``aws`` script itself.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.testing import ProcessCluster
from blocks.testing.servers import BLOB_ACCESS_KEY, BLOB_SECRET_KEY, blob_spec

from .real_clients import clean_env, find_tool, run_tool, tree, write_tree

pytestmark = pytest.mark.process
AWS = find_tool("aws", "awscli")
if importlib.util.find_spec("awscli") is None:
    pytest.skip("awscli is not importable here (pip install awscli)", allow_module_level=True)
RUNNER = Path(__file__).with_name("awscli_runner.py")
MIB = 1024 * 1024
FILES = {
    "top.txt": b"top of the tree\n",
    "notes/a b.txt": b"a key with a space\n",
    "notes/na\u00efve.txt": "non-ASCII key \u00e9\n".encode(),
    "deep/er/data.bin": os.urandom(70 * 1024),  # two 64 KiB chunks on the server
    # Keys that must be escaped in a URL or a copy source.
    "odd/q?x.txt": b"question mark",
    "odd/100%.txt": b"percent",
    "odd/a+b.txt": b"plus",
    "odd/hash#semi;eq=amp&.txt": b"more",
}


class Aws:
    """``aws --endpoint-url ENDPOINT ...`` with a private configuration."""

    def __init__(self, endpoint: str, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        config, credentials = home / "config", home / "credentials"
        # Profile "v4" presigns with SigV4 (the CLI's default presigner is SigV2).
        profile = "region = us-east-1\nmax_attempts = 1\ns3 =\n    addressing_style = path\n"
        config.write_text(
            f"[default]\n{profile}[profile v4]\n{profile}    signature_version = s3v4\n"
        )
        keys = f"aws_access_key_id = {BLOB_ACCESS_KEY}\naws_secret_access_key = {BLOB_SECRET_KEY}\n"
        credentials.write_text(f"[default]\n{keys}[v4]\n{keys}")
        self.endpoint = endpoint
        self.env = clean_env(
            {
                "AWS_CONFIG_FILE": str(config),
                "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
                "AWS_EC2_METADATA_DISABLED": "true",
                "HOME": str(home),
            }
        )

        self.runner = subprocess.Popen(
            [sys.executable, str(RUNNER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            text=True,
        )

    def __call__(self, *arguments: str) -> str:
        """``aws --endpoint-url ENDPOINT ARGUMENTS...``: its stdout; fails unless it exits 0."""
        answer = self._run(arguments)
        assert answer["rc"] == 0, (
            f"aws {' '.join(arguments)} exited {answer['rc']}\n"
            f"--- stdout\n{answer['stdout'][-4000:]}\n--- stderr\n{answer['stderr'][-4000:]}"
        )
        return str(answer["stdout"])

    def fails(self, *arguments: str) -> str:
        """The same for a command that must fail: its stderr."""
        answer = self._run(arguments)
        assert answer["rc"] != 0, f"aws {' '.join(arguments)} succeeded: {answer['stdout']}"
        return str(answer["stderr"])

    def _run(self, arguments: tuple[str, ...]) -> dict[str, Any]:
        argv = ["--endpoint-url", self.endpoint, *arguments]
        assert self.runner.stdin is not None and self.runner.stdout is not None
        self.runner.stdin.write(json.dumps(argv) + "\n")
        self.runner.stdin.flush()
        line = self.runner.stdout.readline()
        assert line, f"the aws runner died: {self.runner.stdout.read()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def script(self, *arguments: str) -> str:
        """The same through the installed ``aws`` script, in a process of its own."""
        return run_tool([AWS, "--endpoint-url", self.endpoint, *arguments], self.env)

    def close(self) -> None:
        assert self.runner.stdin is not None
        self.runner.stdin.close()
        try:
            self.runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.runner.kill()
            self.runner.wait(timeout=30)


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aws]:
    root = tmp_path_factory.mktemp("awscli")
    with ProcessCluster(blob_spec(fsync=False), ["s3"], root / "server") as cluster:
        cluster.start_all()
        aws = Aws(f"http://{cluster.address('s3')}", root / "home")
        try:
            with cluster.failure_notes("the aws CLI against one blob node"):
                yield aws
        finally:
            aws.close()


def test_cp_between_buckets_and_ls(aws: Aws, tmp_path: Path) -> None:
    aws("s3", "mb", "s3://cp-source")
    aws("s3", "mb", "s3://cp-target")
    local = tmp_path / "local.bin"
    local.write_bytes(FILES["deep/er/data.bin"])
    aws("s3", "cp", str(local), "s3://cp-source/in/data.bin")
    # The CLI sends a CRC32 with every upload; the server keeps it and reports it (an earlier
    # server answered GetObjectAttributes without the Checksum it had verified and kept).
    attributes = aws(
        "s3api", "get-object-attributes", "--bucket", "cp-source", "--key", "in/data.bin",
        "--object-attributes", "Checksum", "ObjectSize",
    )  # fmt: skip
    crc32 = base64.b64encode(zlib.crc32(local.read_bytes()).to_bytes(4, "big")).decode()
    assert json.loads(attributes)["Checksum"]["ChecksumCRC32"] == crc32, attributes
    aws("s3", "cp", "s3://cp-source/in/data.bin", "s3://cp-target/out/copy.bin")  # CopyObject

    listing = aws("s3", "ls", "--recursive", "s3://cp-target/")
    assert listing.split()[-2:] == [str(local.stat().st_size), "out/copy.bin"], listing
    assert "PRE out/" in aws("s3", "ls", "s3://cp-target/")
    buckets = aws("s3", "ls").split()
    assert {"cp-source", "cp-target"} <= set(buckets)

    back = tmp_path / "back.bin"
    aws("s3", "cp", "s3://cp-target/out/copy.bin", str(back))
    assert back.read_bytes() == local.read_bytes()

    # Every key of a tree, copied inside the server: the source key goes URL-escaped in
    # x-amz-copy-source (an earlier server cut "q%3Fx.txt" at the "?": NoSuchKey).
    up, down = tmp_path / "up", tmp_path / "down"
    write_tree(up, FILES)
    aws("s3", "cp", "--recursive", str(up), "s3://cp-source/tree/")
    aws("s3", "cp", "--recursive", "s3://cp-source/tree/", "s3://cp-target/tree/")
    aws("s3", "cp", "--recursive", "s3://cp-target/tree/", str(down))
    assert tree(down) == FILES

    # Versioning through s3api: the object PUT before it is the null version, now older.
    aws(
        "s3api", "put-bucket-versioning", "--bucket", "cp-source",
        "--versioning-configuration", "Status=Enabled",
    )  # fmt: skip
    aws("s3", "cp", str(local), "s3://cp-source/in/data.bin")
    listed = json.loads(
        aws("s3api", "list-object-versions", "--bucket", "cp-source", "--prefix", "in/")
    )
    versions = [(v["VersionId"] == "null", v["IsLatest"]) for v in listed["Versions"]]
    assert versions == [(False, True), (True, False)], listed


def test_sync_up_and_down_then_nothing_left_to_sync(aws: Aws, tmp_path: Path) -> None:
    aws("s3", "mb", "s3://sync")
    up, down = tmp_path / "up", tmp_path / "down"
    write_tree(up, FILES)
    # Files older than their upload: object times are whole seconds (as S3's are), so a file
    # written in the second of its upload looks newer than its object and is sent again.
    an_hour_ago = time.time() - 3600
    for path in up.rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    aws("s3", "sync", str(up), "s3://sync/tree/")
    aws("s3", "sync", "s3://sync/tree/", str(down))
    assert tree(down) == FILES

    # sync compares sizes and modification times: a second pass must find nothing to do.
    assert aws("s3", "sync", str(up), "s3://sync/tree/").strip() == ""
    assert aws("s3", "sync", "s3://sync/tree/", str(down)).strip() == ""
    # --exact-timestamps: a download is current only if its mtime (whole seconds, set from the
    # listing) equals the listing's LastModified; an earlier server listed milliseconds, which
    # S3 never does (its times are whole seconds), so every file was downloaded again.
    assert aws("s3", "sync", "--exact-timestamps", "s3://sync/tree/", str(down)).strip() == ""

    # --delete removes what the source no longer has, both ways.
    (up / "top.txt").unlink()
    aws("s3", "sync", "--delete", str(up), "s3://sync/tree/")
    listed = aws("s3", "ls", "--recursive", "s3://sync/tree/")
    assert "tree/top.txt" not in listed and "tree/notes/a b.txt" in listed
    aws("s3", "sync", "--delete", "s3://sync/tree/", str(down))
    assert tree(down) == {k: v for k, v in FILES.items() if k != "top.txt"}

    # One entry a page: a page that ends on a common prefix continues after everything under
    # it (an earlier server's ListObjectVersions listed that prefix again on the next page).
    versions = aws(
        "s3api", "list-object-versions", "--bucket", "sync", "--prefix", "tree/",
        "--delimiter", "/", "--page-size", "1",
    )  # fmt: skip
    prefixes = [common["Prefix"] for common in json.loads(versions)["CommonPrefixes"]]
    assert prefixes == ["tree/deep/", "tree/notes/", "tree/odd/"], versions


def test_presigned_url_fetched_with_plain_http(aws: Aws, tmp_path: Path) -> None:
    aws("s3", "mb", "s3://presign")
    local = tmp_path / "shared.txt"
    local.write_bytes(b"shared by a presigned link")
    aws("s3", "cp", str(local), "s3://presign/shared.txt")
    # SigV2 query auth (the CLI's default), through the installed aws script.
    url = aws.script("s3", "presign", "s3://presign/shared.txt", "--expires-in", "600").strip()
    assert "Signature=" in url and "AWSAccessKeyId=" in url, url
    with urllib.request.urlopen(url, timeout=30) as response:  # no credentials of its own
        assert response.status == 200
        assert response.read() == local.read_bytes()
    # SigV4 query auth, for the longest expiry S3 allows (seven days).
    week = str(7 * 24 * 3600)
    url = aws("--profile", "v4", "s3", "presign", "s3://presign/shared.txt", "--expires-in", week)
    assert "X-Amz-Signature=" in url and f"X-Amz-Expires={week}" in url, url
    with urllib.request.urlopen(url.strip(), timeout=30) as response:
        assert response.read() == local.read_bytes()
    tampered = url.strip().replace("shared.txt", "other.txt")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tampered, timeout=30)
    assert refused.value.code == 403


def test_multipart_cp_above_the_threshold(aws: Aws, tmp_path: Path) -> None:
    """10 MiB is above the CLI's default 8 MiB multipart threshold: two parts of 8 + 2 MiB,
    uploaded, copied and downloaded in parts."""
    aws("s3", "mb", "s3://multi")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(10 * MIB))
    aws("s3", "cp", str(big), "s3://multi/big.bin")

    head = json.loads(aws("s3api", "head-object", "--bucket", "multi", "--key", "big.bin"))
    assert head["ContentLength"] == 10 * MIB
    parts = [big.read_bytes()[: 8 * MIB], big.read_bytes()[8 * MIB :]]
    composite = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert head["ETag"] == f'"{composite}-2"'
    uploads = aws("s3api", "list-multipart-uploads", "--bucket", "multi")
    assert "Uploads" not in (json.loads(uploads) if uploads.strip() else {})

    # Copied inside the server above the threshold: UploadPartCopy of the same two ranges.
    aws("s3", "cp", "s3://multi/big.bin", "s3://multi/copy.bin")
    copied = json.loads(aws("s3api", "head-object", "--bucket", "multi", "--key", "copy.bin"))
    assert copied["ETag"] == head["ETag"] and copied["ContentLength"] == 10 * MIB

    back = tmp_path / "back.bin"
    aws("s3", "cp", "s3://multi/copy.bin", str(back))  # ranged GETs, in parallel
    assert back.read_bytes() == big.read_bytes()


def test_promises_the_server_cannot_keep_are_refused(aws: Aws, tmp_path: Path) -> None:
    """Object lock and tagging on a PUT are not built: 501 and nothing stored, never an
    object stored without them (an earlier server ignored the headers and answered 200, so
    a "locked until 2030" object could be deleted at once)."""
    aws("s3", "mb", "s3://promises")
    local = tmp_path / "kept.txt"
    local.write_bytes(b"must not be stored")
    for extra in (
        ["--object-lock-mode", "COMPLIANCE", "--object-lock-retain-until-date", "2030-01-01"],
        ["--object-lock-legal-hold-status", "ON"],
        ["--tagging", "project=blocks"],
    ):
        put = ["s3api", "put-object", "--bucket", "promises", "--key", "k", "--body", str(local)]
        assert "NotImplemented" in aws.fails(*put, *extra), extra
    assert "Not Found" in aws.fails("s3api", "head-object", "--bucket", "promises", "--key", "k")
