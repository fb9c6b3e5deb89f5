"""Admission control in front of the engine: budgets, a bounded queue, priorities, fairness.

Theory of operation (pure: time from an injected ``Clock``, no I/O):

* **Token budgets.** Each API key has a token bucket holding at most
  ``tokens_per_minute_per_key`` tokens, refilled continuously at that rate. A request costs
  its prompt tokens plus its ``max_tokens`` (the most it can use), reserved on admission;
  ``release`` refunds what it did not use. A request the bucket cannot cover now is refused
  with ``Overloaded`` whose ``retry_after_ms`` is exactly when the bucket will hold enough,
  if nothing else is spent meanwhile. A request costing more than a whole minute's budget can
  never pass and is ``InvalidArgument``.
* **Bounded queue.** At most ``max_queued_requests`` wait here; beyond that, ``Overloaded``
  with a retry-after estimated from the observed drain rate (queue length times the mean
  interval between dequeues, clamped to ``[min_retry_after_ms, max_queue_time_ms]``).
  A request that waited longer than ``max_queue_time_ms`` is expired by ``expire()``.
* **Priorities.** Classes ``0`` (most urgent) to ``num_priorities - 1``, served strictly in
  order: a lower class runs only when every higher class is empty.
* **Fairness.** Within a class, keys are served by deficit round robin measured in tokens:
  each turn a key's deficit grows by ``quantum_tokens`` and it may dequeue requests while its
  deficit covers their cost. Over any interval in which two keys stay backlogged, the tokens
  served to them differ by at most ``quantum_tokens + max request cost``, however many
  requests either one queues.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

from blocks.core.clock import Clock
from blocks.core.errors import Conflict, InvalidArgument, Overloaded

__all__ = ["AdmissionConfig", "AdmissionController", "Ticket"]

MAX_KEYS_TRACKED = 10_000
MAX_KEY_CHARS = 256


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    max_queued_requests: int = 256
    max_queue_time_ms: int = 60_000
    tokens_per_minute_per_key: int | None = None
    quantum_tokens: int = 1024
    num_priorities: int = 3
    min_retry_after_ms: int = 100

    def __post_init__(self) -> None:
        if self.max_queued_requests < 1 or self.max_queue_time_ms < 1:
            raise InvalidArgument("queue limits must be >= 1")
        if self.tokens_per_minute_per_key is not None and self.tokens_per_minute_per_key < 1:
            raise InvalidArgument("tokens_per_minute_per_key must be >= 1")
        if self.quantum_tokens < 1 or not 1 <= self.num_priorities <= 16:
            raise InvalidArgument("quantum_tokens >= 1 and num_priorities in [1, 16]")


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request waiting for the engine."""

    request_id: str
    api_key: str
    cost_tokens: int
    priority: int
    enqueued_s: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_s: float


class _Class:
    """One priority class: per-key FIFO queues served by deficit round robin."""

    __slots__ = ("deficit", "front_charged", "queues", "turns")

    def __init__(self) -> None:
        self.queues: dict[str, deque[Ticket]] = {}
        self.turns: deque[str] = deque()  # keys with queued work, in round-robin order
        self.deficit: dict[str, int] = {}
        # Whether the key at the front already got its quantum for the current turn.
        self.front_charged = False


class AdmissionController:
    """See the module docstring. Not thread-safe: one driver owns it."""

    def __init__(self, config: AdmissionConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._classes = [_Class() for _ in range(config.num_priorities)]
        self._tickets: dict[str, Ticket] = {}
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._last_pop_s: float | None = None
        self._mean_interval_s: float | None = None

    @property
    def queued(self) -> int:
        return len(self._tickets)

    # --------------------------------------------------------------- budgets

    def _bucket(self, key: str, now: float) -> _Bucket | None:
        per_minute = self.config.tokens_per_minute_per_key
        if per_minute is None:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_KEYS_TRACKED:
                self._buckets.popitem(last=False)  # least recently used key; starts full again
            bucket = _Bucket(float(per_minute), now)
            self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        elapsed = max(0.0, now - bucket.updated_s)
        bucket.tokens = min(float(per_minute), bucket.tokens + elapsed * per_minute / 60.0)
        bucket.updated_s = now
        return bucket

    def _queue_retry_after_ms(self) -> int:
        interval = self._mean_interval_s if self._mean_interval_s is not None else 1.0
        estimate = int(self.queued * interval * 1000)
        return max(self.config.min_retry_after_ms, min(estimate, self.config.max_queue_time_ms))

    # --------------------------------------------------------------- commands

    def submit(self, request_id: str, api_key: str, cost_tokens: int, priority: int = 0) -> Ticket:
        """Queue a request or refuse it; nothing changes when it raises."""
        if len(api_key) > MAX_KEY_CHARS:
            raise InvalidArgument("api key too long")
        if not 0 <= priority < self.config.num_priorities:
            raise InvalidArgument(f"priority must be in [0, {self.config.num_priorities})")
        if cost_tokens < 1:
            raise InvalidArgument("cost_tokens must be >= 1")
        if request_id in self._tickets:
            raise Conflict(f"request {request_id!r} is already queued")
        per_minute = self.config.tokens_per_minute_per_key
        if per_minute is not None and cost_tokens > per_minute:
            raise InvalidArgument(
                f"request needs {cost_tokens} tokens, more than the {per_minute}/minute budget"
            )
        if self.queued >= self.config.max_queued_requests:
            raise Overloaded("request queue is full", retry_after_ms=self._queue_retry_after_ms())
        now = self.clock.monotonic()
        bucket = self._bucket(api_key, now)
        if bucket is not None and bucket.tokens < cost_tokens:
            assert per_minute is not None
            wait_s = (cost_tokens - bucket.tokens) * 60.0 / per_minute
            raise Overloaded(
                "token budget for this key is spent", retry_after_ms=math.ceil(wait_s * 1000)
            )
        if bucket is not None:
            bucket.tokens -= cost_tokens
        ticket = Ticket(request_id, api_key, cost_tokens, priority, now)
        cls = self._classes[priority]
        queue = cls.queues.get(api_key)
        if queue is None:
            queue = cls.queues[api_key] = deque()
            cls.turns.append(api_key)
            cls.deficit[api_key] = 0
        queue.append(ticket)
        self._tickets[request_id] = ticket
        return ticket

    def pop_next(self) -> Ticket | None:
        """The next request to run: highest class first, deficit round robin inside it."""
        for cls in self._classes:
            if cls.turns:
                ticket = self._pop_from(cls)
                self._note_pop()
                return ticket
        return None

    def _pop_from(self, cls: _Class) -> Ticket:
        # Bounded: each pass adds a quantum to some key, and costs are finite.
        while True:
            key = cls.turns[0]
            if not cls.front_charged:
                cls.deficit[key] += self.config.quantum_tokens
                cls.front_charged = True
            queue = cls.queues[key]
            head = queue[0]
            if cls.deficit[key] >= head.cost_tokens:
                queue.popleft()
                cls.deficit[key] -= head.cost_tokens
                if not queue:
                    self._drop_key(cls, key)
                del self._tickets[head.request_id]
                return head
            cls.turns.rotate(-1)  # turn over; the deficit carries to the next one
            cls.front_charged = False

    @staticmethod
    def _drop_key(cls: _Class, key: str) -> None:
        if cls.turns[0] == key:
            cls.front_charged = False
        del cls.queues[key]
        del cls.deficit[key]
        cls.turns.remove(key)

    def _note_pop(self) -> None:
        now = self.clock.monotonic()
        if self._last_pop_s is not None:
            interval = max(0.0, now - self._last_pop_s)
            mean = self._mean_interval_s
            self._mean_interval_s = interval if mean is None else 0.8 * mean + 0.2 * interval
        self._last_pop_s = now

    def remove(self, request_id: str) -> Ticket | None:
        """Take a queued request out (cancelled by its client); None if not queued."""
        ticket = self._tickets.pop(request_id, None)
        if ticket is None:
            return None
        cls = self._classes[ticket.priority]
        queue = cls.queues[ticket.api_key]
        queue.remove(ticket)
        if not queue:
            self._drop_key(cls, ticket.api_key)
        return ticket

    def expire(self) -> list[Ticket]:
        """Remove and return every request queued longer than ``max_queue_time_ms``."""
        limit_s = self.config.max_queue_time_ms / 1000
        now = self.clock.monotonic()
        old = [t for t in self._tickets.values() if now - t.enqueued_s > limit_s]
        for ticket in old:
            self.remove(ticket.request_id)
        return old

    def release(self, api_key: str, reserved_tokens: int, used_tokens: int) -> None:
        """Refund the unused part of a reservation (request finished, cancelled or expired)."""
        per_minute = self.config.tokens_per_minute_per_key
        if per_minute is None or used_tokens >= reserved_tokens:
            return
        bucket = self._bucket(api_key, self.clock.monotonic())
        assert bucket is not None
        bucket.tokens = min(float(per_minute), bucket.tokens + reserved_tokens - used_tokens)
