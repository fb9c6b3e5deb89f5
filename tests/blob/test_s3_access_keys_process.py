"""Several access keys against a ``blocks blob serve`` process, with boto3 and the aws CLI:
bucket owners, admin keys, the canned private/public-read policy, anonymous reads, and
ownership that survives a restart (``blob/s3/access.py``)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .real_clients import clean_env, find_tool, run_aws_commands

boto3 = pytest.importorskip("boto3")
from botocore import UNSIGNED  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

pytestmark = pytest.mark.process
KEYS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "root": "root-secret-333"}
LEGACY = ("legacyadmin", "legacy-secret-4444")
STOP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(data_dir: Path, key_file: Path, port: int) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "blocks", "blob", "serve", "--data-dir", str(data_dir),
        "--listen", f"127.0.0.1:{port}", "--no-fsync", "--access-key-file", str(key_file),
        "--access-key", LEGACY[0], "--secret-key", LEGACY[1],
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until the server listens (or dies)
    assert "serving S3" in line, line
    return process


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


class Server:
    def __init__(self, root: Path) -> None:
        self.data_dir = root / "data"
        self.key_file = root / "keys.txt"
        self.key_file.write_text(
            "# id secret [admin]\n"
            f"alice {KEYS['alice']}\n\nbob {KEYS['bob']}\nroot {KEYS['root']} admin\n"
        )
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = _start(self.data_dir, self.key_file, self.port)

    def restart(self) -> None:
        _stop(self.process)
        self.process = _start(self.data_dir, self.key_file, self.port)

    def client(self, name: str | None) -> Any:
        """A boto3 client (reused connections) signing as ``name``, or unsigned (None)."""
        extra: dict[str, Any] = {"signature_version": UNSIGNED} if name is None else {}
        secret = LEGACY[1] if name == LEGACY[0] else KEYS.get(name or "", "")
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=name or "anonymous",
            aws_secret_access_key=secret or "unused",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **extra),
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    try:
        yield running
    finally:
        _stop(running.process)


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def _denied(call: Any, **kw: Any) -> None:
    with pytest.raises(ClientError) as error:
        call(**kw)
    assert _code(error) in ("AccessDenied", "403"), error.value.response


def _names(client: Any) -> set[str]:
    return {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}


def test_owner_other_key_admin_and_public_read(server: Server) -> None:
    alice, bob, root = server.client("alice"), server.client("bob"), server.client("root")
    anonymous, legacy = server.client(None), server.client(LEGACY[0])
    alice.create_bucket(Bucket="alice-b")
    bob.create_bucket(Bucket="bob-b")
    alice.put_object(Bucket="alice-b", Key="k", Body=b"alice's bytes")

    # Another key: denied on every operation, and the bucket is not in its listing.
    _denied(bob.get_object, Bucket="alice-b", Key="k")
    _denied(bob.head_object, Bucket="alice-b", Key="k")
    _denied(bob.put_object, Bucket="alice-b", Key="k", Body=b"overwritten")
    _denied(bob.delete_object, Bucket="alice-b", Key="k")
    _denied(bob.list_objects_v2, Bucket="alice-b")
    _denied(bob.delete_bucket, Bucket="alice-b")
    _denied(bob.put_bucket_acl, Bucket="alice-b", ACL="public-read")
    # Copying out of a bucket needs read access to it, into one the owner's (or an admin's).
    source = {"Bucket": "alice-b", "Key": "k"}
    _denied(bob.copy_object, Bucket="bob-b", Key="stolen", CopySource=source)
    part = bob.create_multipart_upload(Bucket="bob-b", Key="stolen-part")["UploadId"]
    _denied(
        bob.upload_part_copy,
        Bucket="bob-b", Key="stolen-part", UploadId=part, PartNumber=1, CopySource=source,
    )  # fmt: skip
    bob.abort_multipart_upload(Bucket="bob-b", Key="stolen-part", UploadId=part)
    _denied(alice.copy_object, Bucket="bob-b", Key="pushed", CopySource=source)
    _denied(anonymous.get_object, Bucket="alice-b", Key="k")
    _denied(anonymous.list_buckets)
    assert _names(alice) == {"alice-b"} and _names(bob) == {"bob-b"}
    assert alice.get_object(Bucket="alice-b", Key="k")["Body"].read() == b"alice's bytes"

    # Admins (from the file, and the one given by --access-key): everything.
    assert _names(root) == _names(legacy) == {"alice-b", "bob-b"}
    assert root.get_object(Bucket="alice-b", Key="k")["Body"].read() == b"alice's bytes"
    root.put_object(Bucket="bob-b", Key="from-root", Body=b"r")
    assert legacy.get_object(Bucket="bob-b", Key="from-root")["Body"].read() == b"r"

    # public-read: anyone reads and lists; every write still needs the owner.
    alice.put_bucket_acl(Bucket="alice-b", ACL="public-read")
    grants = alice.get_bucket_acl(Bucket="alice-b")["Grants"]
    assert {g["Permission"] for g in grants} == {"FULL_CONTROL", "READ"}
    assert anonymous.get_object(Bucket="alice-b", Key="k")["Body"].read() == b"alice's bytes"
    assert anonymous.head_object(Bucket="alice-b", Key="k")["ContentLength"] == 13
    listed = anonymous.list_objects_v2(Bucket="alice-b")["Contents"]
    assert [entry["Key"] for entry in listed] == ["k"]
    assert bob.get_object(Bucket="alice-b", Key="k")["Body"].read() == b"alice's bytes"
    bob.copy_object(Bucket="bob-b", Key="copied", CopySource={"Bucket": "alice-b", "Key": "k"})
    assert bob.get_object(Bucket="bob-b", Key="copied")["Body"].read() == b"alice's bytes"
    _denied(anonymous.put_object, Bucket="alice-b", Key="anon", Body=b"x")
    _denied(anonymous.delete_object, Bucket="alice-b", Key="k")
    _denied(bob.put_object, Bucket="alice-b", Key="k", Body=b"overwritten")
    _denied(anonymous.get_bucket_acl, Bucket="alice-b")
    assert alice.get_object(Bucket="alice-b", Key="k")["Body"].read() == b"alice's bytes"
    with pytest.raises(ClientError) as missing:
        alice.head_object(Bucket="alice-b", Key="anon")
    assert _code(missing) == "404"

    # Back to private: anonymous and other keys denied again.
    alice.put_bucket_acl(Bucket="alice-b", ACL="private")
    _denied(anonymous.get_object, Bucket="alice-b", Key="k")
    _denied(bob.get_object, Bucket="alice-b", Key="k")
    with pytest.raises(ClientError) as unserved:
        alice.put_bucket_acl(Bucket="alice-b", ACL="public-read-write")
    assert _code(unserved) == "NotImplemented"


def test_ownership_and_policy_survive_a_restart(server: Server) -> None:
    alice = server.client("alice")
    alice.create_bucket(Bucket="kept", ACL="public-read")
    alice.create_bucket(Bucket="closed")
    alice.put_object(Bucket="kept", Key="k", Body=b"v")
    alice.put_object(Bucket="closed", Key="k", Body=b"w")
    server.restart()
    alice, bob, anonymous = server.client("alice"), server.client("bob"), server.client(None)
    assert _names(alice) == {"kept", "closed"} and _names(bob) == set()
    assert anonymous.get_object(Bucket="kept", Key="k")["Body"].read() == b"v"
    _denied(anonymous.get_object, Bucket="closed", Key="k")
    _denied(bob.get_object, Bucket="closed", Key="k")
    _denied(bob.put_object, Bucket="kept", Key="k", Body=b"x")
    assert alice.get_object(Bucket="closed", Key="k")["Body"].read() == b"w"


def test_aws_cli_second_key_is_denied(server: Server) -> None:
    find_tool("aws", "awscli")  # skips without the CLI
    home = server.data_dir.parent / "aws"
    home.mkdir()
    (home / "config").write_text(
        "".join(f"[profile {name}]\nregion = us-east-1\n" for name in ("alice", "bob"))
    )
    (home / "credentials").write_text(
        "".join(
            f"[{name}]\naws_access_key_id = {name}\naws_secret_access_key = {KEYS[name]}\n"
            for name in ("alice", "bob")
        )
    )
    env = clean_env(
        {
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "HOME": str(home),
        }
    )
    endpoint = ["--endpoint-url", server.endpoint, "--output", "json"]
    created, acl, listed = run_aws_commands(
        [
            ["--profile", "alice", "s3api", "create-bucket", "--bucket", "cli-b", *endpoint],
            ["--profile", "alice", "s3api", "get-bucket-acl", "--bucket", "cli-b", *endpoint],
            ["--profile", "bob", "s3api", "list-objects-v2", "--bucket", "cli-b", *endpoint],
        ],
        env,
    )
    assert created["rc"] == 0 and acl["rc"] == 0, (created, acl)
    assert json.loads(acl["stdout"])["Owner"]["ID"] == "alice"
    assert listed["rc"] != 0 and "AccessDenied" in listed["stderr"], listed
