"""The asyncio driver: streaming, cancellation, queue bounds, expiry and priorities."""

from __future__ import annotations

import asyncio
import time

import pytest

from blocks.core.clock import SystemClock
from blocks.core.errors import InvalidArgument, Overloaded, Unavailable
from blocks.inference.admission import AdmissionConfig, AdmissionController
from blocks.inference.async_engine import AsyncEngine
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.factory import tiny_random_model
from blocks.inference.params import FinishReason, SamplingParams
from blocks.inference.tokenizer import CharTokenizer

MODEL = tiny_random_model(seed=4)


class SlowEngine(LLMEngine):
    """Each step takes at least 5 ms, so a 240-token request outlasts the queue timeout."""

    def step(self):  # type: ignore[no-untyped-def]
        time.sleep(0.005)
        return super().step()


def make(max_num_seqs: int = 8, **admission: object) -> AsyncEngine:
    config = EngineConfig(
        num_blocks=64,
        block_size=8,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=64,
        max_model_len=256,
    )
    engine = SlowEngine(MODEL, CharTokenizer(), config)
    return AsyncEngine(engine, AdmissionController(AdmissionConfig(**admission), SystemClock()))  # type: ignore[arg-type]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)


def test_stream_deltas_join_to_the_completion() -> None:
    async def go() -> None:
        async with make() as engine:
            deltas = [d async for d in engine.stream("hello there", greedy(12))]
            assert deltas[-1].finish_reason is FinishReason.LENGTH
            assert all(d.finish_reason is None for d in deltas[:-1])
            whole = await engine.complete("hello there", greedy(12))
            assert "".join(d.text for d in deltas) == whole.text
            assert whole.completion_tokens == 12

    asyncio.run(go())


def test_closing_the_stream_cancels_the_request() -> None:
    async def go() -> None:
        async with make() as engine:
            stream = engine.stream("abc", greedy(200))
            await anext(stream)
            await stream.aclose()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if not engine.engine.has_work():
                    break
            assert not engine.engine.has_work()
            assert engine.engine.scheduler.blocks.num_free_blocks == 64

    asyncio.run(go())


def test_queue_bound_expiry_and_bad_input() -> None:
    async def go() -> None:
        async with make(max_num_seqs=1, max_queued_requests=1, max_queue_time_ms=300) as engine:
            with pytest.raises(InvalidArgument):
                await anext(engine.stream("", greedy(2)))
            long = asyncio.create_task(engine.complete("a", greedy(240)))
            await asyncio.sleep(0.05)  # running
            second = asyncio.create_task(engine.complete("b", greedy(240)))
            await asyncio.sleep(0.05)  # waiting inside the engine
            third = asyncio.create_task(engine.complete("c", greedy(2)))
            await asyncio.sleep(0.05)  # waiting in admission control
            with pytest.raises(Overloaded) as info:
                await engine.complete("d", greedy(2))
            assert info.value.retry_after_ms >= 100
            with pytest.raises(Overloaded):  # queued longer than 300 ms
                await third
            for task in (long, second):
                task.cancel()
        with pytest.raises(Unavailable):
            await anext(engine.stream("x", greedy(1)))

    asyncio.run(go())


def test_higher_priority_runs_first() -> None:
    async def go() -> None:
        async with make(max_num_seqs=1) as engine:
            finished: list[str] = []

            async def run(name: str, priority: int, tokens: int) -> None:
                await engine.complete(name, greedy(tokens), priority=priority)
                finished.append(name)

            first = asyncio.create_task(run("a", 0, 30))
            await asyncio.sleep(0.02)
            filler = asyncio.create_task(run("b", 2, 3))  # goes into the engine's waiting queue
            await asyncio.sleep(0.02)
            low = asyncio.create_task(run("c", 2, 3))
            high = asyncio.create_task(run("d", 0, 3))
            await asyncio.wait_for(asyncio.gather(first, filler, low, high), 30)
            assert finished.index("d") < finished.index("c")

    asyncio.run(go())
