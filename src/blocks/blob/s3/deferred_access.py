"""A request's access check, deferred to its first store call: one thread trip, not two.

Theory of operation. Deciding whether a caller may touch a bucket reads the bucket's owner
and policy under the store's lock, so it runs in a worker thread. A small request (its body
declared and at most ``ACCESS_DEFERRED_BODY_BYTES_MAX``) would then make two trips: one for
the check, one for its store call. Instead the handler parks the check in
``PENDING_ACCESS`` (a context variable, so it belongs to the request's own task) and
``AccessWorkers`` runs it first, in the same worker call, just before the store is touched;
a cached read on the event loop runs it under the store's lock (``ObjectOps._read_nowait``).
Whatever ends the request before any store call runs the check then, so a refused caller
always gets the same error as if the check had come first, and learns nothing else.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TypeVar

from blocks.blob.s3.http import RequestBody
from blocks.blob.s3.workers import Workers

__all__ = ["ACCESS_DEFERRED_BODY_BYTES_MAX", "PENDING_ACCESS", "AccessWorkers", "defers_access"]

T = TypeVar("T")

ACCESS_DEFERRED_BODY_BYTES_MAX = 64 * 1024
"""A request whose declared body is at most this long has its access check run in its
first store call (its body may be read before); any other request has it before its body
is read, and before ``100 Continue`` (see ``S3Handler._handle``)."""

PENDING_ACCESS: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "blob_pending_access", default=None
)
"""The current request's access check while it waits for the first store call; ``None``
once it ran (or when there is none)."""


class AccessWorkers(Workers):
    """``Workers`` whose next call in a request runs that request's pending access check
    first, in the same worker thread (or inline call), and clears it."""

    async def run(self, function: Callable[..., T], *args: object) -> T:
        return await super().run(_after_pending_check(function), *args)

    async def run_inline(self, function: Callable[..., T], *args: object) -> T:
        return await super().run_inline(_after_pending_check(function), *args)

    async def run_upload(self, function: Callable[..., T], *args: object) -> T:
        return await super().run_upload(_after_pending_check(function), *args)


def _after_pending_check(function: Callable[..., T]) -> Callable[..., T]:
    """``function``, or, while the request's access check is pending, ``function`` preceded
    by that check, which is then no longer pending (it runs in the call it is given to)."""
    check = PENDING_ACCESS.get()
    if check is None:
        return function
    PENDING_ACCESS.set(None)
    return functools.partial(_checked, check, function)


def _checked(check: Callable[[], None], function: Callable[..., T], *args: object) -> T:
    check()
    return function(*args)


def defers_access(body: RequestBody) -> bool:
    """Whether the access check may wait for the request's first store call: the body is
    empty or small (declared), so reading it first costs the server at most a few KiB and
    shows a refused caller nothing: it gets the same error, before the store is touched.
    (boto3 sends ``Expect: 100-continue`` with every PUT, so waiting for the check before
    ``100 Continue`` would cost each small PUT a trip of its own.)"""
    return body.length is not None and body.length <= ACCESS_DEFERRED_BODY_BYTES_MAX
