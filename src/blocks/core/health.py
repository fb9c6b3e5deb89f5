"""The ``grpc.health.v1`` service of every block's server: grpc's own ``Check``, and a
``Watch`` whose streams end when a graceful shutdown begins.

grpc's servicer keeps a ``Watch`` stream open for as long as the client holds it, shutdown
included: it sends ``NOT_SERVING`` and goes on waiting. A gRPC server that stops gracefully
waits for open calls during its whole grace period, so every watcher (a coordinator's
replica link, a load balancer's probe, any client) held each stop for that long; 10 s by
default. Here each stream sends ``NOT_SERVING`` (the last word a watcher needs) and returns
when ``enter_graceful_shutdown`` runs, and a ``Watch`` opened after that answers
``NOT_SERVING`` and returns at once. A watcher sees its stream end with OK and may watch
again (a restarted server answers).

``Watch`` reads statuses this class keeps beside grpc's (``set`` updates both): grpc's
watchers live in its private fields, and ending one from outside its loop raced its own
write of ``NOT_SERVING`` (two writes in flight on one call).
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health, health_pb2  # type: ignore[import-untyped,unused-ignore]

__all__ = ["HealthService"]

_Response = health_pb2.HealthCheckResponse


class HealthService(health.aio.HealthServicer):  # type: ignore[misc,unused-ignore]
    """grpc's aio health servicer whose ``Watch`` streams end at a graceful shutdown."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, int] = {"": _Response.SERVING}  # as grpc's starts
        self._changed = asyncio.Condition()
        self._shutting_down = False

    async def Watch(self, request: Any, context: Any) -> None:
        last: int | None = None
        async with self._changed:
            while True:
                status = self._statuses.get(request.service, _Response.SERVICE_UNKNOWN)
                if status != last:
                    await context.write(_Response(status=status))
                    last = status
                if self._shutting_down:
                    return
                await self._changed.wait()

    async def set(self, service: str, status: int) -> None:
        """Set ``service``'s status (ignored once shutting down, as grpc does)."""
        if self._shutting_down:
            return
        await super().set(service, status)
        async with self._changed:
            self._statuses[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service ``NOT_SERVING`` for good (grpc's behaviour), and every ``Watch``
        stream told so and ended."""
        await super().enter_graceful_shutdown()
        async with self._changed:
            self._shutting_down = True
            for service in self._statuses:
                self._statuses[service] = _Response.NOT_SERVING
            self._changed.notify_all()
