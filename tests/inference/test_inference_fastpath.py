"""The decode fast path: packed weights stay the parameters, pure-decode steps are exact."""

from __future__ import annotations

import torch
from inference_reference import make_tiny_model, reference_logits
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from blocks.inference.perf import request_flops
from blocks.inference.runner import ModelRunner, build_batch
from blocks.inference.scheduler import ScheduledChunk


def prefill(runner: ModelRunner, seq: int, prompt: list[int], table: tuple[int, ...]) -> None:
    runner.run([ScheduledChunk(seq, 0, tuple(prompt), table, True)])


def test_pure_decode_steps_match_the_reference() -> None:
    model = make_tiny_model(seed=4)
    runner = ModelRunner(model, num_blocks=32, block_size=4)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
    tables = [(3, 7), (0,), (12, 5)]
    for seq, (prompt, table) in enumerate(zip(prompts, tables, strict=True)):
        prefill(runner, seq, prompt, table)
    # Three sequences of different lengths decode together (padding masked)...
    nxt = [20, 21, 22]
    chunks = [
        ScheduledChunk(seq, len(p), (t,), table, True)
        for seq, (p, t, table) in enumerate(zip(prompts, nxt, tables, strict=True))
    ]
    logits = runner.run(chunks)
    for row, (prompt, token) in enumerate(zip(prompts, nxt, strict=True)):
        want = reference_logits(model, [*prompt, token])[-1]
        torch.testing.assert_close(logits[row].double(), want, atol=1e-9, rtol=1e-9)
    # ... and one alone (no mask at all).
    alone = runner.run([ScheduledChunk(1, 3, (23,), (0,), True)])
    want = reference_logits(model, [8, 9, 21, 23])[-1]
    torch.testing.assert_close(alone[0].double(), want, atol=1e-9, rtol=1e-9)


def test_packed_weights_are_the_parameters() -> None:
    model = make_tiny_model(seed=5)
    names = list(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    packed = model.layer_weights()
    assert list(model.state_dict()) == names  # the checkpoint names are all still there
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    attn = model.model.layers[0].self_attn
    storage = packed[0].qkv.untyped_storage().data_ptr()
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        assert proj.weight.untyped_storage().data_ptr() == storage  # held once, not copied


def test_loading_new_weights_after_packing_is_seen() -> None:
    model = make_tiny_model(seed=6)
    runner = ModelRunner(model, num_blocks=8, block_size=4)
    prefill(runner, 0, [1, 2, 3], (0,))  # packs
    other = make_tiny_model(seed=7)
    model.load_state_dict(other.state_dict())
    got = runner.run([ScheduledChunk(0, 0, (4, 5, 6), (1,), True)])[0]
    torch.testing.assert_close(got.double(), reference_logits(other, [4, 5, 6])[-1])


def test_replaced_or_cast_parameters_are_packed_again() -> None:
    model = make_tiny_model(seed=8)
    runner = ModelRunner(model, num_blocks=8, block_size=4)
    prefill(runner, 0, [1, 2, 3], (0,))
    layer = model.model.layers[1]
    with torch.no_grad():
        fresh = torch.randn_like(layer.mlp.down_proj.weight)
    layer.mlp.down_proj.weight = nn.Parameter(fresh)  # assignment, not an in-place copy
    got = runner.run([ScheduledChunk(0, 0, (4, 5), (1,), True)])[0]
    torch.testing.assert_close(got.double(), reference_logits(model, [4, 5])[-1])
    model.to(torch.float32)
    runner32 = ModelRunner(model, num_blocks=8, block_size=4)
    got32 = runner32.run([ScheduledChunk(0, 0, (4, 5), (1,), True)])[0]
    torch.testing.assert_close(
        got32.double(), reference_logits(model, [4, 5])[-1], atol=1e-4, rtol=1e-4
    )


def test_request_flops_counts_what_the_model_computes() -> None:
    """The bench's compute ceiling rests on ``request_flops``: check it with torch's counter."""
    model = make_tiny_model(seed=9)
    cfg = model.config
    prompt, outputs = 11, 5
    computed = prompt + outputs - 1
    runner = ModelRunner(model, num_blocks=8, block_size=4)
    chunk = ScheduledChunk(0, 0, tuple(range(1, computed + 1)), (0, 1, 2, 3), True)
    with FlopCounterMode(display=False) as counter:
        hidden = model(*build_batch([chunk], 4, model.device)[:2], runner.kv_cache)
        model.logits(hidden[-outputs:])
    counted = counter.get_total_flops()
    # torch's counter does not count the attention kernel used here, so the attention term
    # (4 * q flops per causal (query, key) pair, per layer) is added here by hand.
    q = cfg.num_heads * cfg.head_dim
    causal_attention = 4 * q * cfg.num_layers * computed * (computed + 1) / 2
    assert counted > 0
    assert request_flops(cfg, prompt, outputs) == counted + causal_attention
