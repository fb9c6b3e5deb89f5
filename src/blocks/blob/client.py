"""``S3Client``: a small synchronous S3 client (SigV4-signed) for the CLI, the demo and scripts.

Theory of operation: each call builds one path-style request, signs every header it sends
with ``sigv4.sign_request`` (payload hash included), sends it on a kept-alive
``http.client`` connection and turns an S3 error document back into ``S3ClientError`` with the
code. It covers what the CLI and demo need; real applications should keep using boto3, which
the test suite runs against the same server.
"""

from __future__ import annotations

import hashlib
import http.client
import time
import xml.etree.ElementTree as ElementTree
from urllib.parse import quote, urlsplit

from blocks.blob.s3.sigv4 import sign_request
from blocks.core.errors import BlocksError, InvalidArgument

__all__ = ["S3Client", "S3ClientError"]


class S3ClientError(BlocksError):
    """The server answered with an S3 error; ``code`` and ``status`` say which."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


def _text(element: ElementTree.Element, name: str) -> str:
    for child in element.iter():
        if child.tag.rpartition("}")[2] == name:
            return child.text or ""
    return ""


class S3Client:
    """Talks to ``endpoint`` (``http://host:port``) with one access key."""

    def __init__(
        self, endpoint: str, access_key: str = "", secret_key: str = "", timeout_s: float = 30.0
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise InvalidArgument(f"endpoint must look like http://host:port, got {endpoint!r}")
        self._netloc = f"{parts.hostname}:{parts.port}"
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        self._access_key, self._secret_key = access_key, secret_key

    def close(self) -> None:
        self._connection.close()

    def request(
        self,
        method: str,
        bucket: str = "",
        key: str = "",
        query: str = "",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        path = "/" + quote(bucket) + ("/" + quote(key, safe="/~") if key else "")
        sent = {
            "host": self._netloc,
            "x-amz-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
            "content-length": str(len(body)),
            **{name.lower(): value for name, value in (headers or {}).items()},
        }
        if self._access_key:
            sent["authorization"] = sign_request(
                method, path, query, sent, self._access_key, self._secret_key, sent["x-amz-date"]
            )
        target = path + (f"?{query}" if query else "")
        try:
            self._connection.request(method, target, body=body, headers=sent)
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            raise
        reply_headers = {name.lower(): value for name, value in response.getheaders()}
        if response.status >= 300:
            code, message = str(response.status), response.reason
            if data:
                root = ElementTree.fromstring(data)
                code, message = _text(root, "Code"), _text(root, "Message")
            raise S3ClientError(response.status, code, message)
        return response.status, reply_headers, data

    def create_bucket(self, bucket: str) -> None:
        self.request("PUT", bucket)

    def list_buckets(self) -> list[str]:
        _, _, data = self.request("GET")
        root = ElementTree.fromstring(data)
        return [
            _text(element, "Name")
            for element in root.iter()
            if element.tag.rpartition("}")[2] == "Bucket"
        ]

    def put_object(self, bucket: str, key: str, data: bytes) -> str:
        _, headers, _ = self.request("PUT", bucket, key, body=data)
        return headers.get("etag", "").strip('"')

    def get_object(self, bucket: str, key: str, byte_range: str | None = None) -> bytes:
        headers = {"range": byte_range} if byte_range else None
        return self.request("GET", bucket, key, headers=headers)[2]

    def delete_object(self, bucket: str, key: str) -> None:
        self.request("DELETE", bucket, key)

    def list_keys(self, bucket: str, prefix: str = "") -> list[tuple[str, int]]:
        """Every ``(key, size)`` under ``prefix``, following continuation tokens."""
        found: list[tuple[str, int]] = []
        token = ""
        for _ in range(100_000):
            query = "list-type=2&prefix=" + quote(prefix, safe="")
            if token:
                query = "continuation-token=" + quote(token, safe="") + "&" + query
            _, _, data = self.request("GET", bucket, query=query)
            root = ElementTree.fromstring(data)
            for element in root:
                if element.tag.rpartition("}")[2] == "Contents":
                    found.append((_text(element, "Key"), int(_text(element, "Size"))))
            token = _text(root, "NextContinuationToken")
            if _text(root, "IsTruncated") != "true":
                return found
        raise AssertionError("listing did not end")
