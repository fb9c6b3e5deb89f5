"""A minimal OpenAI-compatible streaming server over HF transformers ``generate``, for the sweep.

It is the HF contender of ``benchmarks/inference_sweep.py``, written for the benchmark only:
``POST /v1/completions`` (streamed as SSE, greedy, one token per chunk, a final ``usage``
chunk) and ``GET /health``. Batching is **static**: one worker thread takes every request
waiting (up to ``--batch-max``), left-pads the prompts with an attention mask and runs one
``generate`` to the longest ``max_tokens`` of the batch; a streamer sends each row's tokens as
they are produced and ends each row's stream at its own ``max_tokens`` or end of sequence, so
a request is answered as if streamed. Requests arriving meanwhile wait for the next batch:
that is what static batching costs, and is the point of the comparison.

Run: ``python -m benchmarks._sweep_hf_server --gguf FILE --port N --threads T``.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BATCH_MAX_DEFAULT = 16
WAITING_MAX = 1024  # requests queued for a batch; more are refused with 429
BODY_BYTES_MAX = 1 << 20


@dataclass(slots=True)
class Job:
    prompt_ids: list[int]
    max_tokens: int
    chunks: queue.Queue[int | None] = field(default_factory=queue.Queue)  # None: the end
    produced: int = 0
    done: bool = False


class Worker:
    """Runs static batches of waiting jobs through ``generate``, one batch at a time."""

    def __init__(self, model: Any, eos_id: int | None, pad_id: int, batch_max: int) -> None:
        self.model, self.eos_id, self.pad_id, self.batch_max = model, eos_id, pad_id, batch_max
        self.waiting: queue.Queue[Job] = queue.Queue(WAITING_MAX)

    def run_forever(self) -> None:
        while True:
            batch = [self.waiting.get()]
            while len(batch) < self.batch_max:
                try:
                    batch.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                self._generate(batch)
            finally:
                for job in batch:
                    if not job.done:
                        job.done = True
                        job.chunks.put(None)

    def _generate(self, batch: list[Job]) -> None:
        import torch
        from transformers.generation.streamers import BaseStreamer

        worker = self

        class Rows(BaseStreamer):
            def __init__(self) -> None:
                self.calls = 0

            def put(self, value: Any) -> None:
                self.calls += 1
                if self.calls == 1:  # the first call carries the prompts
                    return
                for job, token in zip(batch, value.reshape(-1).tolist(), strict=True):
                    worker._emit(job, int(token))

            def end(self) -> None:
                pass

        width = max(len(j.prompt_ids) for j in batch)
        ids = [[self.pad_id] * (width - len(j.prompt_ids)) + j.prompt_ids for j in batch]
        mask = [[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in batch]
        with torch.inference_mode():
            self.model.generate(
                input_ids=torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                max_new_tokens=max(j.max_tokens for j in batch),
                do_sample=False,
                pad_token_id=self.pad_id,
                streamer=Rows(),
            )

    def _emit(self, job: Job, token: int) -> None:
        if job.done:
            return
        if token == self.eos_id:
            job.done = True
            job.chunks.put(None)
            return
        job.produced += 1
        job.chunks.put(token)
        if job.produced >= job.max_tokens:
            job.done = True
            job.chunks.put(None)


def handler(worker: Worker, tokenizer: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the stream ends when the connection closes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._json(200, {"status": "ok"} if self.path == "/health" else {"data": []})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/v1/completions" or not 0 < length <= BODY_BYTES_MAX:
                self._json(404, {"error": {"message": "only POST /v1/completions"}})
                return
            body = json.loads(self.rfile.read(length))
            job = Job(tokenizer.encode(body["prompt"]), int(body.get("max_tokens", 16)))
            try:
                worker.waiting.put_nowait(job)
            except queue.Full:
                self._json(429, {"error": {"message": "too many waiting requests"}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            while (token := job.chunks.get()) is not None:
                text = tokenizer.decode([token])
                self._event({"object": "text_completion", "choices": [{"index": 0, "text": text}]})
            usage = {"prompt_tokens": len(job.prompt_ids), "completion_tokens": job.produced}
            self._event({"object": "text_completion", "choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _event(self, payload: dict[str, Any]) -> None:
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-max", type=int, default=BATCH_MAX_DEFAULT)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    path = Path(args.gguf)
    load: Any = AutoModelForCausalLM.from_pretrained
    model = load(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer: Any = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    worker = Worker(model, tokenizer.eos_token_id, pad_id, args.batch_max)
    threading.Thread(target=worker.run_forever, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(worker, tokenizer))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
