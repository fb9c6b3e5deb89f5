"""Issue #14, blob stalls, reproduced with the kit: six authenticated PUTs that declare a
100 GB body and send nothing must not hold up other requests. Before a3c28ac each stalled
upload held a default-pool worker thread and every other request (list, get, put) waited
about 60 s. Now a declared size over the object limit is refused before reading, and one
under it waits on the uploads' own pool, so other requests go on."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from blocks.blob.client import S3Client
from blocks.blob.s3.sigv4 import sign_request
from blocks.testing import ProcessCluster
from blocks.testing.servers import BLOB_ACCESS_KEY, BLOB_SECRET_KEY, blob_spec

pytestmark = pytest.mark.process
STALLED_UPLOADS = 6
ANSWER_WITHIN_S = 15.0  # far below the ~60 s stall; generous for a loaded machine


def _stalled_put(address: str, key: str, declared_bytes: int) -> socket.socket:
    """Send a signed PUT's head declaring ``declared_bytes`` and no body; keep it open."""
    host, port = address.rsplit(":", 1)
    path = f"/stall/{key}"
    headers = {
        "host": address,
        "x-amz-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "content-length": str(declared_bytes),
    }
    headers["authorization"] = sign_request(
        "PUT", path, "", headers, BLOB_ACCESS_KEY, BLOB_SECRET_KEY, headers["x-amz-date"]
    )
    head = f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection((host, int(port)), timeout=ANSWER_WITHIN_S)
    sock.sendall((head + "\r\n").encode())
    return sock


@pytest.mark.parametrize(
    "declared_bytes", [100 * 10**9, 1024**3], ids=["100GB-over-the-limit", "1GiB-under-it"]
)
def test_uploads_that_send_nothing_do_not_stall_other_requests(
    tmp_path: Path, declared_bytes: int
) -> None:
    with ProcessCluster(blob_spec(), ["solo"], tmp_path) as cluster, cluster.failure_notes("stall"):
        cluster.start_all()
        endpoint = f"http://{cluster.address('solo')}"
        client = S3Client(endpoint, BLOB_ACCESS_KEY, BLOB_SECRET_KEY, ANSWER_WITHIN_S)
        client.create_bucket("stall")
        client.put_object("stall", "before", b"kept")
        address = cluster.address("solo")
        stalled = [_stalled_put(address, f"big{n}", declared_bytes) for n in range(STALLED_UPLOADS)]
        try:
            answered: list[str] = []

            def others() -> None:
                fresh = S3Client(endpoint, BLOB_ACCESS_KEY, BLOB_SECRET_KEY, ANSWER_WITHIN_S)
                try:
                    fresh.list_keys("stall")
                    answered.append("list")
                    assert fresh.get_object("stall", "before") == b"kept"
                    answered.append("get")
                    fresh.put_object("stall", "after", b"small")
                    answered.append("put")
                finally:
                    fresh.close()

            worker = threading.Thread(target=others, daemon=True)
            worker.start()
            worker.join(timeout=3 * ANSWER_WITHIN_S)
            assert answered == ["list", "get", "put"], f"answered only {answered}"
        finally:
            for sock in stalled:
                sock.close()
            client.close()
