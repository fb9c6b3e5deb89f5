"""A server that answers boto3's S3 calls while doing nothing else: the benchmark's ceiling.

``blocks bench blob`` runs it as the contender ``ceiling (null server)``. It reads each
request whole and answers at once: no signature check, no hashing, no disk, objects kept as
the bytes objects that arrived. Like S3, it answers a GET that asks for checksums
(``x-amz-checksum-mode: ENABLED``, which boto3 sends by default) with the checksum headers
the object's PUT carried: stored, never computed. boto3 then verifies the body against them,
as it does against any server that keeps checksums, so that client work is in the ceiling
too (without it, boto3's CRC32 of a 64 MiB body was about a third of the ceiling's client
time). For the same reason it answers with the headers S3 puts on its answers and boto3
parses: ``x-amz-request-id``, ``Date`` and ``Server`` on every call, and on a GetObject the
object's ``Last-Modified`` (which boto3 parses into a datetime, the largest of these costs),
``Content-Type`` and ``Accept-Ranges``; a PutObject's answer echoes its checksum, as S3's
does. The values are kept strings (the date formatted once per second), so they cost the
server nothing; parsing them cost boto3 about 0.15 ms per 4 KiB GET on the 2-core machine of
docs/blob.md, a sixth of the whole request. ``--bare`` leaves them out (only ``ETag``, the
length and a GET's checksums): the ceiling of the rounds before. Whatever one client
reaches against it is what boto3, the loopback and the shared CPU allow *any* server to
reach on that machine, so a ratio to moto can be read against the ratio this server gets.
It is not an S3 implementation: it speaks only the calls the benchmark makes (CreateBucket,
PutObject, GetObject and the three multipart calls), with fixed ETags.

Run: ``python -m benchmarks.null_s3 PORT [--bare]`` from the repository root.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import urllib.parse
from email.utils import formatdate

_ETAG = '"00000000000000000000000000000000"'
_REQUEST_ID = "0000000000000001"
_upload_ids = itertools.count(1)
_date_second = -1
_date_text = ""


def _http_date() -> str:
    """Now as an HTTP date, formatted once per second."""
    global _date_second, _date_text
    now = int(time.time())
    if now != _date_second:
        _date_second, _date_text = now, formatdate(now, usegmt=True)
    return _date_text


def _response(status: str, headers: dict[str, str], body: bytes = b"") -> tuple[bytes, bytes]:
    """The response's head and its body (written separately: a body is never copied)."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        pieces: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass  # trailers
                return b"".join(pieces)
            pieces.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return await reader.readexactly(int(headers.get("content-length", "0")))


class _NullS3:
    def __init__(self, bare: bool = False) -> None:
        self.bare = bare
        """Only ``ETag``, the length and a GET's checksums (no S3 standard headers)."""
        self.objects: dict[str, bytes] = {}
        self.checksums: dict[str, dict[str, str]] = {}
        """A PutObject's ``x-amz-checksum-*`` headers, answered on a GET that asks."""
        self.standard: dict[str, dict[str, str]] = {}
        """An object's ``Last-Modified``, ``Content-Type`` and ``Accept-Ranges``."""
        self.parts: dict[str, dict[int, bytes]] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await _read_body(reader, headers)
                head_bytes, body = self.answer(method, target, body, headers)
                writer.write(head_bytes)
                if body:
                    writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def answer(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> tuple[bytes, bytes]:
        status, answer, body = self._answer(method, target, body, headers)
        if not self.bare:
            answer.update({"x-amz-request-id": _REQUEST_ID, "Date": _http_date()})
            answer["Server"] = "AmazonS3"
        return _response(status, answer, body)

    def _answer(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> tuple[str, dict[str, str], bytes]:
        path, _, query_text = target.partition("?")
        query = urllib.parse.parse_qs(query_text, keep_blank_values=True)
        key = urllib.parse.unquote(path)
        is_object = "/" in key.strip("/")
        if method == "PUT" and "partNumber" in query:
            self.parts[query["uploadId"][0]][int(query["partNumber"][0])] = body
            return "200 OK", {"ETag": _ETAG}, b""
        if method == "PUT":
            if is_object:
                self.objects[key] = body
                self.checksums[key] = {
                    name: value
                    for name, value in headers.items()
                    if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-algorithm"
                }
                self.standard[key] = {
                    "Last-Modified": _http_date(),
                    "Content-Type": headers.get("content-type", "application/octet-stream"),
                    "Accept-Ranges": "bytes",
                }
                if not self.bare:  # S3 echoes the checksum it was sent
                    return "200 OK", {"ETag": _ETAG, **self.checksums[key]}, b""
            return "200 OK", {"ETag": _ETAG}, b""
        if method == "POST" and "uploads" in query:
            upload = str(next(_upload_ids))
            self.parts[upload] = {}
            bucket, _, name = key.strip("/").partition("/")
            xml = (
                f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{name}</Key>"
                f"<UploadId>{upload}</UploadId></InitiateMultipartUploadResult>"
            )
            return "200 OK", {"Content-Type": "application/xml"}, xml.encode()
        if method == "POST" and "uploadId" in query:
            parts = self.parts.pop(query["uploadId"][0])
            self.objects[key] = b"".join(parts[number] for number in sorted(parts))
            self.checksums.pop(key, None)  # S3's would be a composite, which boto3 skips
            self.standard[key] = {
                "Last-Modified": _http_date(),
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
            }
            xml = f"<CompleteMultipartUploadResult><ETag>{_ETAG}</ETag></CompleteMultipartUploadResult>"
            return "200 OK", {"Content-Type": "application/xml"}, xml.encode()
        if method == "GET" and key in self.objects:
            answer = {"ETag": _ETAG}
            if not self.bare:
                answer.update(self.standard.get(key, {}))
            checksums = self.checksums.get(key)
            if checksums and headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
                answer.update(checksums)
                answer["x-amz-checksum-type"] = "FULL_OBJECT"
            return "200 OK", answer, self.objects[key]
        return "404 Not Found", {}, b""


async def _main(port: int, bare: bool) -> None:
    server = await asyncio.start_server(_NullS3(bare).serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(_main(int(sys.argv[1]), "--bare" in sys.argv[2:]))
    except KeyboardInterrupt:
        pass
