"""``AsyncClosing``: ``async with`` for anything with an ``async close()``.

Every async client, broker and queue in the blocks closes the same way at the end of an
``async with`` block; this is that one piece, so a class only writes its ``close``.
"""

from __future__ import annotations

from typing import Self

__all__ = ["AsyncClosing"]


class AsyncClosing:
    """``async with thing:`` gives ``thing`` and awaits ``thing.close()`` on the way out,
    whether the block raised or not (its exception then passes on unchanged).

    Subclasses define ``close``; it should be idempotent, since callers may also call it."""

    __slots__ = ()

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
