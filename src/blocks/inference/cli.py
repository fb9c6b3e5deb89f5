"""``blocks inference ...``: serve the OpenAI-compatible API, chat, generate once.

* ``serve --model smollm2 --listen 127.0.0.1:8000 [--api-key KEY ...]
  [--tokens-per-minute-per-key N] [--max-queued-requests N]``: runs until Ctrl-C or SIGTERM,
  printing one ``listening on HOST:PORT`` line (a JSON object with ``--json``) once ready.
* ``serve --replicas N ...``: N engine processes behind a router on ``--listen``.
* ``route --backend URL [--backend URL ...]``: the router alone, in front of any
  OpenAI-compatible servers (ours, vLLM, llama.cpp's server); see ``router``.
* ``chat --model smollm2``: a terminal conversation with the local engine (or, with
  ``--url``, with a running server).
* ``generate --model smollm2 --prompt TEXT``: one completion, optionally with speculative
  decoding (``--speculative ngram`` or ``--speculative layers:N``) and its acceptance stats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import urllib.request
from typing import Any

from blocks.cli import (
    ServerOptions,
    add_server_arguments,
    announce,
    print_result,
    server_options,
)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("inference", help="batched LLM engine with an OpenAI API")
    sub = parser.add_subparsers(dest="inference_command", metavar="COMMAND")

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model", default="smollm2", help="smollm2, tiny-random, a .gguf or a folder"
        )
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
        p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
        p.add_argument("--num-blocks", type=int, default=1024, help="KV cache blocks of 16 tokens")
        p.add_argument("--max-num-seqs", type=int, default=32)
        p.add_argument("--max-model-len", type=int, default=2048)
        p.add_argument("--max-num-batched-tokens", type=int, default=512, help="tokens per step")
        p.add_argument(
            "--num-speculative-tokens",
            type=int,
            default=0,
            help="n-gram drafts per decoding request and step while the batch is small (0: off)",
        )
        p.add_argument("--speculative-max-batch", type=int, default=4)
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        if p is not serve:
            p.add_argument("--json", action="store_true", help="print results as JSON")

    serve = sub.add_parser("serve", help="run the OpenAI-compatible HTTP server")
    model_args(serve)
    add_server_arguments(
        serve, block="inference", tls=False, listen_help="where the OpenAI API listens"
    )
    serve.add_argument("--api-key", action="append", default=[], help="accepted key (repeatable)")
    serve.add_argument("--tokens-per-minute-per-key", type=int, default=None)
    serve.add_argument("--max-queued-requests", type=int, default=256)
    serve.add_argument("--max-queue-time-ms", type=int, default=60_000)
    serve.add_argument("--model-name", default=None, help="id reported by /v1/models")
    serve.add_argument(
        "--replicas", type=int, default=1, help="engine processes behind a router (default 1)"
    )
    _router_args(serve)
    serve.set_defaults(func=_serve)

    route = sub.add_parser("route", help="route OpenAI requests over several servers")
    add_server_arguments(
        route, block="inference", tls=False, token=False, listen_help="where the router listens"
    )
    route.add_argument(
        "--backend", action="append", required=True, metavar="URL", help="http://HOST:PORT"
    )
    _router_args(route)
    route.set_defaults(func=_route)

    chat = sub.add_parser("chat", help="talk to the model in the terminal")
    model_args(chat)
    chat.add_argument("--url", default=None, help="a running server's base URL (…/v1)")
    chat.add_argument("--api-key", default="", help="key for --url")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0)
    chat.set_defaults(func=_chat)

    gen = sub.add_parser("generate", help="one completion from a prompt")
    model_args(gen)
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--speculative", default=None, help="ngram or layers:N")
    gen.set_defaults(func=_generate)


def _router_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("router")
    group.add_argument(
        "--no-affinity", action="store_true", help="ignore prompt prefixes; least-loaded only"
    )
    group.add_argument("--prefix-chars", type=int, default=1024, help="affinity key length (chars)")
    group.add_argument(
        "--overload-factor",
        type=float,
        default=2.0,
        help="leave a prefix's replica when its outstanding tokens exceed this times the "
        "least-loaded one's (plus --overload-slack-tokens)",
    )
    group.add_argument("--overload-slack-tokens", type=int, default=1024)


def _router(args: argparse.Namespace, options: ServerOptions, backends: list[str]) -> Any:
    from blocks.inference.router import Router
    from blocks.inference.router_policy import RouterConfig

    config = RouterConfig(
        affinity=not args.no_affinity,
        prefix_chars=args.prefix_chars,
        overload_factor=args.overload_factor,
        overload_slack_tokens=args.overload_slack_tokens,
    )
    return Router(backends, config=config, host=options.host, port=options.port)


def _route(args: argparse.Namespace) -> int:
    options = server_options(args)
    _router(args, options, list(args.backend))  # bad URLs and knobs fail now, with one line
    _uvloop_run(_route_async(args, options, list(args.backend), None))
    return 0


async def _route_async(
    args: argparse.Namespace, options: ServerOptions, backends: list[str], replicas: Any
) -> None:
    """Run the router until SIGINT/SIGTERM, then drain it (and stop the replicas)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    metrics: Any = None
    try:
        if replicas is not None:
            backends = await replicas.start()
        router = _router(args, options, backends)
        bound = await router.start()
        if options.metrics_listen is not None:
            from blocks.core.metrics import MetricsHttp

            metrics = MetricsHttp(router.registry, lambda: bool(router.policy.up()))
            metrics.start(options.metrics_listen[1], options.metrics_listen[0])
        where = f"{router.host}:{bound}"
        pids = None if replicas is None else replicas.pids
        announce(
            options,
            f"routing on {where} to {', '.join(backends)}",
            address=where,
            listen=where,
            backends=backends,
            replica_pids=pids,
            metrics_port=None if metrics is None else metrics.port,
        )
        await stop.wait()
        await router.stop()
    finally:
        if metrics is not None:
            metrics.stop()
        if replicas is not None:
            await replicas.stop()


def _serve_replicas(args: argparse.Namespace) -> int:
    from blocks.inference.router_replicas import ReplicaSet

    options = server_options(args)
    forwarded = ["--model", args.model, "--num-blocks", str(args.num_blocks)]
    for flag in (
        "device",
        "dtype",
        "max_num_seqs",
        "max_model_len",
        "max_num_batched_tokens",
        "num_speculative_tokens",
        "speculative_max_batch",
        "threads",
        "tokens_per_minute_per_key",
        "max_queued_requests",
        "max_queue_time_ms",
        "model_name",
    ):
        value = getattr(args, flag)
        if value is not None:
            forwarded += [f"--{flag.replace('_', '-')}", str(value)]
    for key in [*args.api_key, *([options.token] if options.token else [])]:
        forwarded += ["--api-key", key]
    forwarded += ["--log-level", args.log_level, *(["--access-log"] if args.access_log else [])]
    replicas = ReplicaSet(args.replicas, forwarded)
    _uvloop_run(_route_async(args, options, [], replicas))
    return 0


def _engine(args: argparse.Namespace) -> Any:
    import torch

    from blocks.inference.engine import EngineConfig
    from blocks.inference.factory import load_engine

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model != "tiny-random":
        from blocks.inference.loader import resolve_model_path

        resolve_model_path(args.model)  # a wrong name fails now, with one line
    print(f"loading model {args.model}...", file=sys.stderr, flush=True)
    started = time.monotonic()
    config = EngineConfig(
        num_blocks=args.num_blocks,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        num_speculative_tokens=args.num_speculative_tokens,
        speculative_max_batch=args.speculative_max_batch,
    )
    engine = load_engine(args.model, device=args.device, dtype=args.dtype, config=config)
    print(f"loaded {args.model} in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return engine


def _serve(args: argparse.Namespace) -> int:
    from blocks.core.clock import SystemClock
    from blocks.inference.admission import AdmissionConfig, AdmissionController
    from blocks.inference.async_engine import AsyncEngine
    from blocks.inference.server import InferenceServer

    if args.replicas != 1:
        return _serve_replicas(args)
    options = server_options(args)  # a busy port fails now, not after the model loads
    engine = _engine(args)
    admission = AdmissionController(
        AdmissionConfig(
            max_queued_requests=args.max_queued_requests,
            max_queue_time_ms=args.max_queue_time_ms,
            tokens_per_minute_per_key=args.tokens_per_minute_per_key,
        ),
        SystemClock(),
    )
    api_keys = [*args.api_key, *([options.token] if options.token else [])]
    server = InferenceServer(
        AsyncEngine(engine, admission),
        model_name=args.model_name or args.model,
        api_keys=api_keys,
        host=options.host,
        port=options.port,
    )
    _uvloop_run(_serve_async(server, engine, options))
    return 0


async def _serve_async(server: Any, engine: Any, options: ServerOptions) -> None:
    from blocks.core.metrics import MetricsHttp

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    bound = await server.start()
    metrics = None
    if options.metrics_listen is not None:
        metrics = MetricsHttp(engine.metrics.registry)
        metrics.start(options.metrics_listen[1], options.metrics_listen[0])
    where = f"{server.host}:{bound}"
    announce(
        options,
        f"listening on {where}",
        address=where,
        metrics_port=None if metrics is None else metrics.port,
        listen=where,
        model=server.model_name,
    )
    try:
        await stop.wait()
    finally:
        if metrics is not None:
            metrics.stop()
        await server.stop()


def _uvloop_run(main: Any) -> None:
    import uvloop

    uvloop.run(main)


def _chat(args: argparse.Namespace) -> int:
    history: list[dict[str, str]] = []
    engine = None if args.url else _engine(args)
    print("type a message; an empty line or Ctrl-D ends the chat", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            return 0
        if not line:
            return 0
        history.append({"role": "user", "content": line})
        if engine is None:
            reply = _remote_chat(args, history)
            print(f"bot> {reply}")
        else:
            reply = _local_chat(engine, args, history)
        history.append({"role": "assistant", "content": reply})


def _local_chat(engine: Any, args: argparse.Namespace, history: list[dict[str, str]]) -> str:
    from blocks.inference.params import SamplingParams

    prompt = engine.tokenizer.apply_chat_template(history)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature)
    engine.add_request("chat", prompt, params)
    parts: list[str] = []
    print("bot> ", end="", flush=True)
    while engine.has_work():
        for delta in engine.step():
            parts.append(delta.text)
            print(delta.text, end="", flush=True)
    print()
    return "".join(parts)


def _remote_chat(args: argparse.Namespace, history: list[dict[str, str]]) -> str:
    body = json.dumps(
        {
            "model": args.model,
            "messages": history,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
        }
    ).encode()
    request = urllib.request.Request(
        args.url.rstrip("/") + "/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {args.api_key}"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        reply: str = json.load(response)["choices"][0]["message"]["content"]
    return reply


def _generate(args: argparse.Namespace) -> int:
    from blocks.inference.params import SamplingParams

    engine = _engine(args)
    prompt = args.prompt
    if args.chat:
        prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
    )
    started = time.perf_counter()
    result: dict[str, Any]
    if args.speculative:
        result = _speculate(engine, prompt, params, args.speculative)
    else:
        [done] = engine.generate([prompt], params)
        result = {
            "text": done.text,
            "completion_tokens": done.completion_tokens,
            "finish_reason": done.finish_reason.value,
        }
    elapsed = time.perf_counter() - started
    result["seconds"] = round(elapsed, 3)
    result["tokens_per_s"] = round(result["completion_tokens"] / elapsed, 2) if elapsed else 0.0
    print_result(result, as_json=args.json, text=result["text"])
    return 0


def _speculate(engine: Any, prompt: str, params: Any, how: str) -> dict[str, Any]:
    from blocks.core.errors import InvalidArgument
    from blocks.inference.speculative import SpeculativeDecoder, truncated_draft

    draft = None
    if how.startswith("layers:"):
        draft = truncated_draft(engine.model, int(how.split(":", 1)[1]))
    elif how != "ngram":
        raise InvalidArgument("--speculative takes ngram or layers:N")
    decoder = SpeculativeDecoder(engine.model, draft, max_len=engine.config.max_model_len)
    out = decoder.generate(engine.tokenizer.encode(prompt), params)
    text = engine.tokenizer.decode(
        [t for t in out.token_ids if t not in engine.tokenizer.eos_token_ids]
    )
    return {
        "text": text,
        "completion_tokens": len(out.token_ids),
        "acceptance_rate": round(out.acceptance_rate, 3),
        "target_passes": out.target_passes,
    }
