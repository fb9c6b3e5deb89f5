"""Which backend a design runs on, and where each of its blocks ended up.

``Backend`` names the three choices of ``--backend``; ``Placement`` records, block by block,
what ``examples.backends.Blocks`` built, and on ``engines`` every block that still runs on
blocks' own implementation with the reason, so a session can print it and put it in its JSON.
"""

from __future__ import annotations

import argparse
import enum
from dataclasses import dataclass, field

from blocks.core.errors import InvalidArgument

__all__ = ["BACKENDS", "Backend", "Placement", "add_backend_argument", "parse_backend"]


class Backend(enum.StrEnum):
    LOCAL = "local"
    CLUSTER = "cluster"
    ENGINES = "engines"


BACKENDS = tuple(backend.value for backend in Backend)


def parse_backend(value: str | Backend) -> Backend:
    """The backend named ``value``; anything else is ``InvalidArgument`` naming the three."""
    try:
        return Backend(value)
    except ValueError:
        raise InvalidArgument(
            f"unknown backend {value!r}: expected one of {', '.join(BACKENDS)}"
        ) from None


@dataclass(slots=True)
class Placement:
    """Where each block of a design runs; on ``engines``, which ones are blocks' own."""

    backend: Backend
    where: dict[str, str] = field(default_factory=dict)
    own: dict[str, str] = field(default_factory=dict)
    """On ``engines``: block -> why it runs on blocks' own implementation."""
    engines: list[str] = field(default_factory=list)

    def place(self, block: str, where: str, *, own_because: str | None = None) -> None:
        self.where[block] = where
        if own_because is not None and self.backend is Backend.ENGINES:
            self.own[block] = own_because

    def lines(self) -> list[str]:
        out = [f"backend {self.backend.value}:"]
        out += [f"  {block}: {where}" for block, where in self.where.items()]
        out += [f"  started {engine}" for engine in self.engines]
        out += [
            f"  NOT ON AN ENGINE: {block} runs on blocks' own implementation ({why})"
            for block, why in self.own.items()
        ]
        return out

    def summary(self) -> dict[str, object]:
        return {
            "backend": self.backend.value,
            "blocks": dict(self.where),
            "own_implementation": dict(self.own),
            "engines": list(self.engines),
        }


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """``--backend local|cluster|engines`` (default ``cluster``); argparse refuses others."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=Backend.CLUSTER.value,
        help="local: blocks in this process; cluster: blocks' own servers (default); "
        "engines: NATS JetStream, Redis, an S3 endpoint, an OpenAI URL",
    )
