"""Batch-1 decode's short path: the runner's one-token step, the parameter-assignment count
``layer_weights`` trusts, and the driver that steps on in its worker thread."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch
from inference_reference import make_tiny_model, reference_logits
from test_inference_async import greedy, make
from torch import nn

from blocks.inference import row_decode
from blocks.inference.cpu_blas import products
from blocks.inference.runner import ModelRunner, _unrolled_tables, build_batch
from blocks.inference.scheduler import ScheduledChunk

needs_blas = pytest.mark.skipif(products() is None, reason="numpy's BLAS is not OpenBLAS")


def test_table_slots_are_the_unrolled_table() -> None:
    cases = [((4, 5, 6), 9), ((4, 5, 6), 12), ((0,), 1), ((5, 2, 7), 10), ((3, 4, 9), 9)]
    for table, count in cases:
        chunk = ScheduledChunk(0, count - 1, (1,), table, True)
        want = _unrolled_tables([chunk], count, 4)[0].numpy()
        got = row_decode.table_slots(table, count, 4)
        as_array = np.arange(1024)[got] if isinstance(got, slice) else got
        assert np.array_equal(as_array, want), (table, count)
        consecutive = all(b == table[0] + i for i, b in enumerate(table[: -(-count // 4)]))
        assert isinstance(got, slice) == consecutive


@needs_blas
def test_a_one_token_step_that_samples_nothing_still_writes_its_cache() -> None:
    """A prompt's last chunk may be one token that is not sampled (the next chunk samples):
    the short path writes its key and value and returns no logits."""
    model = make_tiny_model(seed=21)
    runner = ModelRunner(model, num_blocks=8, block_size=4)
    table = (6, 1)
    runner.run([ScheduledChunk(0, 0, (3, 1, 4), table, False)])
    assert runner.run([ScheduledChunk(0, 3, (1,), table, False)]).shape[0] == 0
    logits = runner.run([ScheduledChunk(0, 4, (5,), table, True)])[0]
    want = reference_logits(model, [3, 1, 4, 1, 5])[-1]
    torch.testing.assert_close(logits.double(), want, atol=1e-9, rtol=1e-9)


@needs_blas
def test_forward_of_a_lone_token_is_the_runners_short_path() -> None:
    """``model(...)`` on a lone token's batch (what embeddings of one token run) takes the
    numpy path too, and returns a tensor equal to what the runner's short path computes."""
    model = make_tiny_model(seed=23)
    runner = ModelRunner(model, num_blocks=8, block_size=4)
    chunk = ScheduledChunk(0, 0, (7,), (3,), True)
    ids, batch, _ = build_batch([chunk], 4, model.device)
    hidden = model(ids, batch, model.new_kv_cache(32))
    assert isinstance(hidden, torch.Tensor) and hidden.shape == (1, model.config.hidden_size)
    torch.testing.assert_close(model.logits(hidden), runner.run([chunk]), atol=0, rtol=0)
    want = reference_logits(model, [7])[-1]
    torch.testing.assert_close(model.logits(hidden)[0], want, atol=1e-9, rtol=1e-9)


@needs_blas
def test_a_parameter_assigned_after_packing_is_seen_by_batch1_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    row_decode_calls: list[int] = []
    real = row_decode.decode_row

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        row_decode_calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(row_decode, "decode_row", counted)
    model = make_tiny_model(seed=22)
    runner = ModelRunner(model, num_blocks=8, block_size=4)
    table = (0, 1)
    runner.run([ScheduledChunk(0, 0, (1, 2, 3), table, True)])
    runner.run([ScheduledChunk(0, 3, (4,), table, True)])  # packed, and checked once
    gate = model.model.layers[0].mlp.gate_proj  # type: ignore[union-attr]
    with torch.no_grad():
        fresh = torch.randn_like(gate.weight)
    gate.weight = nn.Parameter(fresh)  # an assignment, not a write through
    calls = len(row_decode_calls)
    # A one-token prompt takes the short path first, so it is the one that must repack.
    got = runner.run([ScheduledChunk(1, 0, (5,), (2,), True)])[0]
    assert len(row_decode_calls) == calls + 1
    want = reference_logits(model, [5])[-1]
    torch.testing.assert_close(got.double(), want, atol=1e-9, rtol=1e-9)


def test_a_lone_stream_gets_each_token_as_it_is_made() -> None:
    """The worker thread steps on by itself, and still hands over every step's token at
    once (each step of this engine takes at least 5 ms)."""

    async def go() -> None:
        async with make() as engine:
            arrivals = [(time.monotonic(), d) async for d in engine.stream("abc", greedy(20))]
            assert [len(d.token_ids) for _, d in arrivals] == [1] * 20
            assert arrivals[-1][0] - arrivals[0][0] >= 0.05

    asyncio.run(go())


def test_a_request_arriving_mid_decode_joins_at_once() -> None:
    async def go() -> None:
        async with make() as engine:
            long = asyncio.create_task(engine.complete("a", greedy(100)))  # >= 0.5 s of steps
            await asyncio.sleep(0.05)
            short = await asyncio.wait_for(engine.complete("b", greedy(3)), 5)
            assert short.completion_tokens == 3
            assert not long.done()
            assert (await long).completion_tokens == 100

    asyncio.run(go())
