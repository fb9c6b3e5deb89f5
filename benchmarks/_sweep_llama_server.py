"""llama.cpp's own C++ server (``llama-server``) with continuous batching, for the sweep.

llama-cpp-python's server answers one request at a time. llama.cpp's ``llama-server``
batches running requests into every decode step (``--parallel N --cont-batching``), and it
has no pip package of its own; the ``xllamacpp`` wheel (prebuilt, no compiler needed:
``pip install xllamacpp``) links that same server code and starts its HTTP listener in
process. This script sets the options ``llama-server --parallel N --cont-batching
--threads T`` would, starts the listener on the given port, and blocks until it is stopped.

The wheel is built without ``-march=native`` (its README says CPU wheels leave AVX-512 and
AMX off for portability), so a build from source on this machine could be faster: the
benchmark reports what the registry installs.

Run: ``python -m benchmarks._sweep_llama_server --gguf FILE --port N --threads T
--parallel P``.
"""

from __future__ import annotations

import argparse
import importlib
import threading

CONTEXT_PER_SLOT = 2048  # tokens of KV cache each parallel slot gets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=16, help="slots decoded together")
    parser.add_argument("--alias", default="bench")
    args = parser.parse_args()

    xllamacpp = importlib.import_module("xllamacpp")  # installed by the set-up, not a dependency
    params = xllamacpp.CommonParams()
    params.model.path = args.gguf
    params.model_alias = {args.alias}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_parallel = args.parallel
    params.cont_batching = True
    params.n_ctx = CONTEXT_PER_SLOT * args.parallel  # shared by the slots
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.warmup = True
    server = xllamacpp.Server(params)
    print(f"llama-server (xllamacpp) at {server.listening_address}", flush=True)
    threading.Event().wait()  # the listener runs on the library's threads


if __name__ == "__main__":
    main()
