"""Where the router sends a request: outstanding tokens and prefix-cache affinity (pure).

Theory of operation: every replica carries its *outstanding tokens*, the sum of
``prompt estimate + max_tokens`` over the requests the router has in flight on it; that is
the work the replica still owes, which the number of requests alone does not say (one
2,000-token request outweighs ten short ones). A request goes to:

1. with affinity on, the replica that rendezvous hashing (``blocks.core.hashing.rendezvous``)
   picks for a hash of the request's shared prefix (``prompt_prefix``: a chat's system
   messages, cut to ``prefix_chars``), so requests sharing a system prompt land where its KV
   blocks are already cached; unless that replica is
   *overloaded*: its outstanding tokens exceed ``overload_factor`` times the least-loaded
   replica's plus ``overload_slack_tokens`` (the slack keeps an idle cluster from spilling
   the second request of a prefix);
2. otherwise, the healthy replica with the fewest outstanding tokens (ties: fewest requests,
   then name).

Rendezvous hashing moves only the prefixes of a replica that leaves (and takes back only
those when it returns), so one dead replica does not reshuffle every other prefix's cache.

Health: a replica is *up* or *down*. A failed request (connection refused or reset) or
``down_after_failures`` failed health checks in a row take it down; one passing health check
brings it back. Down replicas get no requests. No I/O, clocks or threads here: the router's
driver reports outcomes and asks for choices.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from blocks.core.errors import InvalidArgument, Unavailable
from blocks.core.hashing import key_hash, rendezvous

__all__ = ["Choice", "ReplicaState", "RouterConfig", "RouterPolicy", "prompt_prefix"]

CHARS_PER_TOKEN = 4  # a router fronting any server has no tokenizer: estimate prompt tokens
DEFAULT_MAX_TOKENS = 256  # what a request without max_tokens is charged
MAX_REPLICAS = 256


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """The routing policy's knobs (see the module docstring)."""

    affinity: bool = True
    prefix_chars: int = 1024
    overload_factor: float = 2.0
    overload_slack_tokens: int = 1024
    down_after_failures: int = 2

    def __post_init__(self) -> None:
        if self.prefix_chars < 1 or self.overload_slack_tokens < 0:
            raise InvalidArgument("prefix_chars must be >= 1 and overload_slack_tokens >= 0")
        if not self.overload_factor >= 1.0:
            raise InvalidArgument("overload_factor must be >= 1")
        if self.down_after_failures < 1:
            raise InvalidArgument("down_after_failures must be >= 1")


class Health(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(slots=True)
class ReplicaState:
    name: str
    health: Health = Health.UP
    outstanding_tokens: int = 0  # invariant: >= 0, the sum of its in-flight costs
    in_flight: int = 0
    failed_checks: int = 0
    requests: int = 0  # requests ever sent here (attempts)


class Reason(enum.Enum):
    AFFINITY = "affinity"  # the prefix's rendezvous replica
    OVERLOAD = "overload"  # the prefix's replica was overloaded: least-loaded instead
    LEAST_LOADED = "least_loaded"  # affinity off


@dataclass(frozen=True, slots=True)
class Choice:
    replica: str
    reason: Reason


@dataclass(slots=True)
class RouterPolicy:
    """Replica states and the choice rule; see the module docstring."""

    config: RouterConfig
    replicas: dict[str, ReplicaState] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in Reason})

    @classmethod
    def of(cls, names: Iterable[str], config: RouterConfig | None = None) -> RouterPolicy:
        policy = cls(config or RouterConfig())
        for name in names:
            policy.add(name)
        return policy

    def add(self, name: str) -> None:
        if not name or name in self.replicas:
            raise InvalidArgument(f"replica name {name!r} is empty or repeated")
        if len(self.replicas) >= MAX_REPLICAS:
            raise InvalidArgument(f"at most {MAX_REPLICAS} replicas")
        self.replicas[name] = ReplicaState(name)

    def up(self) -> list[str]:
        return [r.name for r in self.replicas.values() if r.health is Health.UP]

    def choose(self, prefix_key: str, exclude: Iterable[str] = ()) -> Choice:
        """The replica for a request whose prompt starts with ``prefix_key``.

        Raises ``Unavailable`` when no replica outside ``exclude`` is up.
        """
        skip = set(exclude)
        candidates = [self.replicas[n] for n in self.up() if n not in skip]
        if not candidates:
            raise Unavailable("no healthy replica to route to")
        least = min(candidates, key=lambda r: (r.outstanding_tokens, r.in_flight, r.name))
        if not self.config.affinity:
            return self._count(Choice(least.name, Reason.LEAST_LOADED))
        key = key_hash(prefix_key[: self.config.prefix_chars]).to_bytes(8, "big")
        [target] = rendezvous(key, [r.name for r in candidates])
        limit = (
            self.config.overload_factor * least.outstanding_tokens
            + self.config.overload_slack_tokens
        )
        if self.replicas[target].outstanding_tokens > limit:
            return self._count(Choice(least.name, Reason.OVERLOAD))
        return self._count(Choice(target, Reason.AFFINITY))

    def _count(self, choice: Choice) -> Choice:
        self.reasons[choice.reason.value] += 1
        return choice

    def start(self, name: str, cost_tokens: int) -> None:
        """A request of ``cost_tokens`` was sent to ``name``."""
        replica = self.replicas[name]
        replica.outstanding_tokens += cost_tokens
        replica.in_flight += 1
        replica.requests += 1

    def finish(self, name: str, cost_tokens: int) -> None:
        """That request ended (answered, failed or cancelled)."""
        replica = self.replicas[name]
        replica.outstanding_tokens -= cost_tokens
        replica.in_flight -= 1
        assert replica.outstanding_tokens >= 0 and replica.in_flight >= 0, replica

    def handle_request_failure(self, name: str) -> None:
        """The replica refused or reset a connection: take it out until a check passes."""
        replica = self.replicas[name]
        replica.health = Health.DOWN
        replica.failed_checks = max(replica.failed_checks, self.config.down_after_failures)

    def handle_health(self, name: str, ok: bool) -> None:
        """One health check's outcome."""
        replica = self.replicas[name]
        if ok:
            replica.failed_checks = 0
            replica.health = Health.UP
            return
        replica.failed_checks += 1
        if replica.failed_checks >= self.config.down_after_failures:
            replica.health = Health.DOWN


def prompt_prefix(body: object) -> tuple[str, int]:
    """The affinity key text and the token cost of an OpenAI request body.

    The key is the part of the prompt that requests share: for a chat, the leading system
    (or developer) messages' roles and contents, so every conversation under one system
    prompt goes to one replica; without a system message, the first message, so the turns
    of one conversation follow each other. For a completion, the prompt itself (the policy
    keeps its first ``prefix_chars``); for embeddings, the ``input``. The cost is the whole prompt's estimated tokens plus
    ``max_tokens`` (or ``max_completion_tokens``, else ``DEFAULT_MAX_TOKENS``; none for
    embeddings), times ``n``.
    Malformed bodies get an empty key and the default cost: the backend answers them with
    its own 400.
    """
    if not isinstance(body, dict):
        return "", DEFAULT_MAX_TOKENS
    messages = body.get("messages")
    key = text = ""
    if isinstance(messages, list):
        parts = [
            f"{m.get('role', '')}\n{m.get('content', '')}\n"
            for m in messages
            if isinstance(m, dict)
        ]
        text = "".join(parts)
        leading = 0
        while leading < len(parts) and parts[leading].startswith(("system\n", "developer\n")):
            leading += 1
        key = "".join(parts[: max(1, leading)])
    elif isinstance(body.get("prompt"), str):
        key = text = body["prompt"]
    elif isinstance(body.get("prompt"), list):
        key = text = repr(body["prompt"][:64])
    elif isinstance(body.get("input"), str):  # an embeddings request
        key = text = body["input"]
    elif isinstance(body.get("input"), list):
        key = text = repr(body["input"][:64])
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if "input" in body and "messages" not in body and "prompt" not in body:
        max_tokens = 0  # embeddings generate nothing
    elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        max_tokens = DEFAULT_MAX_TOKENS
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        n = 1
    return key, n * (len(text) // CHARS_PER_TOKEN + max_tokens)
