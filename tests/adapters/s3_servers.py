"""S3 stores for the adapter tests: moto's S3 server as a process, and emptying a store.

``MotoServer`` runs ``python -m moto.server`` (a real HTTP server, in its own process) on a
free 127.0.0.1 port with the minimum part size lowered to ``MOTO_PART_BYTES_MIN`` through
moto's ``S3_UPLOAD_PART_MIN_SIZE`` setting, so multipart completion is exercised with small
parts; ready when its port accepts a connection. ``empty_store`` removes every upload,
object and bucket through the adapter, so each contract example starts from nothing.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys

from blocks.blob.adapters.s3 import S3BlobStore
from blocks.testing.engines import EngineProcess

MOTO_PART_BYTES_MIN = 200
MOTO_ACCESS_KEY, MOTO_SECRET_KEY = "AKIDMOTO", "moto-secret"


def moto_missing() -> str | None:
    """Why moto's server cannot run here, or ``None``."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        return "moto[server] is not installed (the 'test' extra)"
    if shutil.which("env") is None:
        return "no env program to set moto's settings"
    return None


class MotoServer(EngineProcess):
    name = "moto S3 server"

    def _find_binary(self) -> str | None:
        return sys.executable

    def _install_hint(self) -> str:
        return "pip install 'moto[server]'"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            "env",
            f"S3_UPLOAD_PART_MIN_SIZE={MOTO_PART_BYTES_MIN}",
            self.binary,
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]


def empty_store(store: S3BlobStore) -> None:
    """Abort every upload, delete every object, then every bucket."""
    for bucket in store.list_buckets():
        for upload in store.list_multipart_uploads(bucket.name):
            store.abort_multipart_upload(bucket.name, upload.key, upload.upload_id)
        token: str | None = None
        while True:
            page = store.list_objects(bucket.name, continuation_token=token)
            for info in page.objects:
                store.delete_object(bucket.name, info.key)
            if page.next_token is None:
                break
            token = page.next_token
        store.delete_bucket(bucket.name)
