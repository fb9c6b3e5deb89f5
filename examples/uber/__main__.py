"""``python -m examples.uber [--backend local|cluster|engines] [--seed N] [--json]``: run
the scripted simulation on one backend (``examples/backends.py``)."""

from __future__ import annotations

import argparse
import sys

from examples.backends import add_backend_argument
from examples.common import run_command
from examples.uber.session import run_session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.uber", description="Uber assembled from the blocks."
    )
    parser.add_argument("--seed", type=int, default=11)
    add_backend_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    return run_command(run_session(say, seed=args.seed, backend=args.backend), args)


if __name__ == "__main__":
    sys.exit(main())
