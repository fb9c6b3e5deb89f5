"""Model runner: turns a scheduled step into tensors, runs the model, returns logits.

Theory of operation: the scheduler speaks in chunks (sequence, start position, tokens, block
table). ``build_batch`` flattens them into the index tensors ``AttentionBatch`` describes,
building everything in Python lists first and moving each tensor to the device once. The
runner owns the KV cache tensor; the block manager owns which slots mean what. Logits are
computed only for the last token of chunks that sample, which skips the vocabulary
projection for every other prefill token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blocks.inference.model import AttentionBatch, LlamaForCausalLM
from blocks.inference.scheduler import ScheduledChunk

__all__ = ["ModelRunner", "build_batch"]


def build_batch(
    chunks: Sequence[ScheduledChunk], block_size: int, device: torch.device
) -> tuple[torch.Tensor, AttentionBatch, list[int]]:
    """Flat token ids, the attention batch, and the flat row of every sampling chunk's end."""
    assert chunks, "an empty step has nothing to run"
    tokens: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    sample_rows: list[int] = []
    output_index: list[int] = []
    query_index: list[list[int]] = []
    max_query = max(len(c.token_ids) for c in chunks)
    max_blocks = max(len(c.block_table) for c in chunks)
    for row, chunk in enumerate(chunks):
        first = len(tokens)
        count = len(chunk.token_ids)
        table = chunk.block_table
        for offset, token in enumerate(chunk.token_ids):
            position = chunk.start + offset
            tokens.append(token)
            positions.append(position)
            slots.append(table[position // block_size] * block_size + position % block_size)
            output_index.append(row * max_query + offset)
        if chunk.sample:
            sample_rows.append(len(tokens) - 1)
        query_index.append([first + min(i, count - 1) for i in range(max_query)])
    tables = torch.tensor(
        [list(c.block_table) + [0] * (max_blocks - len(c.block_table)) for c in chunks]
    )
    starts = torch.tensor([c.start for c in chunks])
    counts = torch.tensor([len(c.token_ids) for c in chunks])
    max_context = int((starts + counts).max())
    key_positions = torch.arange(max_context)
    key_slots = tables[:, key_positions // block_size] * block_size + key_positions % block_size
    query_offsets = torch.arange(max_query)[None, :]
    # A query at position p sees keys 0..p. Padding queries (offset >= count) see key 0
    # only, so their softmax stays finite; their rows are dropped by output_index.
    limit = torch.where(query_offsets < counts[:, None], starts[:, None] + query_offsets + 1, 1)
    mask = key_positions[None, None, :] < limit[:, :, None]

    def as_long(values: object) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.long).to(device, non_blocking=True)

    batch = AttentionBatch(
        positions=as_long(positions),
        slot_mapping=as_long(slots),
        query_index=as_long(query_index),
        key_slots=as_long(key_slots),
        mask=mask.unsqueeze(1).to(device),
        output_index=as_long(output_index),
    )
    return as_long(tokens), batch, sample_rows


class ModelRunner:
    """Owns the model and its KV cache; one ``run`` per scheduler step."""

    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int) -> None:
        self.model = model
        self.block_size = block_size
        self.kv_cache = model.new_kv_cache(num_blocks * block_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def run(self, chunks: Sequence[ScheduledChunk]) -> torch.Tensor:
        """Logits ``(sampling chunks, vocab)``, in the order of the sampling chunks."""
        token_ids, batch, sample_rows = build_batch(chunks, self.block_size, self.device)
        hidden = self.model(token_ids, batch, self.kv_cache)
        if not sample_rows:
            return torch.empty((0, self.model.config.vocab_size), dtype=torch.float32)
        rows = torch.tensor(sample_rows, dtype=torch.long, device=hidden.device)
        return self.model.logits(hidden[rows])

    @torch.inference_mode()
    def run_all(self, chunk: ScheduledChunk) -> torch.Tensor:
        """Logits ``(len(chunk.token_ids), vocab)`` at every token of one chunk (verification)."""
        token_ids, batch, _ = build_batch([chunk], self.block_size, self.device)
        return self.model.logits(self.model(token_ids, batch, self.kv_cache))
