"""One shape for every block's contract: a Hypothesis state machine with the same hooks.

Theory of operation
-------------------
Each block's ``contract.py`` is a ``RuleBasedStateMachine`` that drives an implementation
and a trivial model side by side. ``Contract`` is their common base, so a test author learns
one set of hooks for every block:

``make_subject()``
    Required. Build the implementation under test. It may read ``self.clock``, a
    ``ManualClock`` the contract owns and advances (implementations must take their time from
    it), and may be ``async``.
``restart_subject(subject)``
    Optional. Close ``subject`` and open the same durable state again, returning the new
    object; return ``None`` (the default) when the implementation is not durable, and the
    contract's restart rule is a no-op. May be ``async``.
``close_subject(subject)``
    Optional. Release ``subject`` at the end of a run; the default calls its ``close()``
    (awaited when it is a coroutine). May be ``async``.

Sync and async implementations use the same hooks: the contract calls them through
``resolve()``, which awaits a coroutine on the machine's own event loop (created on first
use, closed by ``finish_subject``) and passes a plain value through; async contracts drive
the implementation with ``run(coroutine)`` on the same loop, and ``expect(coroutine, error)``
checks that a call fails with the block's error. ``properties`` names what a
contract checks; each contract's docstring states every rule its model enforces.

Capabilities: an implementation that gives only some of ``properties`` (an adapter on an
engine) is declared by setting ``declared_properties`` on the contract subclass; rules of
the others are skipped, by name, through ``supports(name)`` (a ``precondition``), and
``skipped_properties()`` lists them for the test's report.

Old hook names (``make_store``, ``make_queue``, ``reopen_store``, ``restart``, ...) still work
as deprecated aliases: a subclass that defines one gets a ``DeprecationWarning`` when the
class is created, and the contract's default ``make_subject``/``restart_subject`` call it.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Awaitable, Coroutine
from typing import Any, ClassVar, Generic, TypeVar, cast

from hypothesis.stateful import RuleBasedStateMachine

from blocks.core.clock import ManualClock
from blocks.core.errors import BlocksError

__all__ = ["Contract"]

S = TypeVar("S")
T = TypeVar("T")


class Contract(RuleBasedStateMachine, Generic[S]):
    """Base of the block contracts; see the module docs for the hooks."""

    properties: ClassVar[tuple[str, ...]] = ()
    """The properties this contract checks, by name (see its docstring for each rule)."""

    declared_properties: ClassVar[frozenset[str] | None] = None
    """The properties the implementation under test gives; ``None``: all of them."""

    legacy_hooks: ClassVar[dict[str, str]] = {}
    """Deprecated hook name -> the hook that replaces it, per contract."""

    clock: ManualClock

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for old, new in cls.legacy_hooks.items():
            # The contract that declares the aliases defines them itself; its users should not.
            if old in cls.__dict__ and "legacy_hooks" not in cls.__dict__:
                warnings.warn(
                    f"{cls.__name__}.{old} is deprecated; override {new}() instead",
                    DeprecationWarning,
                    stacklevel=2,
                )

    def __init__(self) -> None:
        super().__init__()
        self._contract_loop: asyncio.AbstractEventLoop | None = None
        self.clock = ManualClock(wall_ms=1_000_000)

    # -- hooks ------------------------------------------------------------------------------

    def make_subject(self) -> S | Awaitable[S]:
        """Build the implementation under test (may be ``async``)."""
        raise NotImplementedError(f"{type(self).__name__} must override make_subject()")

    def restart_subject(self, subject: S) -> S | Awaitable[S | None] | None:
        """Close ``subject`` and reopen its durable state; ``None``: not durable."""
        return None

    def close_subject(self, subject: S) -> Awaitable[None] | None:
        """Release ``subject``; by default call its ``close()``, if it has one."""
        close = getattr(subject, "close", None)
        return cast("Awaitable[None] | None", close()) if callable(close) else None

    # -- capabilities -----------------------------------------------------------------------

    def supports(self, name: str) -> bool:
        """Whether the implementation claims property ``name`` (one of ``properties``)."""
        assert name in self.properties, f"{name!r} is not a property of {type(self).__name__}"
        declared = self.declared_properties
        return declared is None or name in declared

    @classmethod
    def skipped_properties(cls) -> tuple[str, ...]:
        """The contract's properties the implementation does not claim (their rules skip)."""
        declared = cls.declared_properties
        return () if declared is None else tuple(p for p in cls.properties if p not in declared)

    # -- plumbing the contracts use -----------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The machine's event loop for async implementations, created on first use."""
        if self._contract_loop is None:
            self._contract_loop = asyncio.new_event_loop()
        return self._contract_loop

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` to completion on the machine's loop."""
        return self.loop.run_until_complete(_await(awaitable))

    def expect(self, coroutine: Coroutine[Any, Any, Any], error: type[BlocksError]) -> None:
        """Run ``coroutine`` on the machine's loop; ``AssertionError`` unless it raises the
        block's ``error`` (any other exception propagates as it is)."""
        try:
            self.run(coroutine)
        except error:
            return
        raise AssertionError(f"expected {error.__name__}")

    def resolve(self, value: T | Awaitable[T]) -> T:
        """What a hook returned: awaited on the machine's loop if awaitable, else as is."""
        if inspect.isawaitable(value):
            return self.run(cast("Awaitable[T]", value))
        return value

    def open_subject(self) -> S:
        """Call ``make_subject`` (awaiting it if async)."""
        return self.resolve(self.make_subject())

    def reopen_subject(self, subject: S) -> S | None:
        """Call ``restart_subject`` (awaiting it if async)."""
        return self.resolve(self.restart_subject(subject))

    def finish_subject(self, subject: S | None) -> None:
        """Close ``subject`` (if any) and then the machine's loop; for ``teardown``."""
        try:
            if subject is not None:
                self.resolve(self.close_subject(subject))
        finally:
            if self._contract_loop is not None:
                self._contract_loop.close()
                self._contract_loop = None


async def _await(value: Awaitable[T]) -> T:
    return await value
