"""Model runner: turns a scheduled step into tensors, runs the model, returns logits.

Theory of operation: the scheduler speaks in chunks (sequence, start position, tokens, block
table). ``build_batch`` flattens them into the index tensors ``AttentionBatch`` describes:
one attention group for all one-token chunks (decoding sequences) and one per longer chunk,
so nothing is padded to a prefill chunk's length. Index lists are built in Python and each
tensor moves to the device once; a lone decoding sequence needs no mask at all, and where the
model has a path for one token (``LlamaForCausalLM.decode_one``, batch-1 decode on the CPU)
it needs no index tensors either: its slot and context come from the block table as numbers
and a slice. The runner owns the KV cache tensor; the block
manager owns which slots mean what. Logits are computed only where a token is sampled: the
last token of a sampling chunk, plus, for a chunk carrying speculative drafts, the rows
that verify them; every other prefill token skips the vocabulary projection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blocks.core.errors import InvalidArgument
from blocks.inference.model import AttentionBatch, AttentionGroup, LlamaForCausalLM
from blocks.inference.row_decode import table_slots
from blocks.inference.scheduler import ScheduledChunk

__all__ = ["ModelRunner", "build_batch", "logit_rows"]


def logit_rows(chunk: ScheduledChunk) -> int:
    """How many trailing tokens of ``chunk`` need logits: drafts plus one, or none."""
    return chunk.num_drafts + 1 if chunk.sample else 0


def build_batch(
    chunks: Sequence[ScheduledChunk], block_size: int, device: torch.device
) -> tuple[torch.Tensor, AttentionBatch, list[int]]:
    """Flat token ids, the attention batch, and the flat rows that need logits, in order."""
    assert chunks, "an empty step has nothing to run"
    tokens: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    sample_rows: list[int] = []
    firsts: list[int] = []
    for chunk in chunks:
        firsts.append(len(tokens))
        table = chunk.block_table
        for offset, token in enumerate(chunk.token_ids):
            position = chunk.start + offset
            tokens.append(token)
            positions.append(position)
            slots.append(table[position // block_size] * block_size + position % block_size)
        wanted = logit_rows(chunk)
        sample_rows.extend(range(len(tokens) - wanted, len(tokens)))
    groups: list[AttentionGroup] = []
    singles = [i for i, c in enumerate(chunks) if len(c.token_ids) == 1]
    if singles:
        rows = None if len(singles) == len(tokens) else [firsts[i] for i in singles]
        groups.append(_decode_group([chunks[i] for i in singles], rows, block_size, device))
    for chunk, first in zip(chunks, firsts, strict=True):
        if len(chunk.token_ids) > 1:
            groups.append(_chunk_group(chunk, first, block_size, device))
    batch = AttentionBatch(_long(positions, device), _long(slots, device), tuple(groups))
    return _long(tokens, device), batch, sample_rows


def _long(values: object, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long).to(device, non_blocking=True)


def _unrolled_tables(
    chunks: Sequence[ScheduledChunk], context: int, block_size: int
) -> torch.Tensor:
    """``(chunks, context)`` cache slots of positions ``0 .. context - 1`` of each table."""
    width = max(len(c.block_table) for c in chunks)
    tables = torch.tensor(
        [list(c.block_table) + [0] * (width - len(c.block_table)) for c in chunks]
    )
    positions = torch.arange(context)
    return tables[:, positions // block_size] * block_size + positions % block_size


def _decode_group(
    chunks: Sequence[ScheduledChunk], rows: list[int] | None, block_size: int, device: torch.device
) -> AttentionGroup:
    """One-token chunks: each query sees its whole context; padding is masked."""
    ends = [c.start + 1 for c in chunks]
    context = max(ends)
    key_slots = _unrolled_tables(chunks, context, block_size)
    mask = None
    if min(ends) < context:
        visible = torch.arange(context)[None, :] < torch.tensor(ends)[:, None]
        mask = visible[:, None, None, :].to(device)
    rows_tensor = None if rows is None else _long(rows, device)
    return AttentionGroup(_long(key_slots, device), mask, rows=rows_tensor)


def _chunk_group(
    chunk: ScheduledChunk, first: int, block_size: int, device: torch.device
) -> AttentionGroup:
    """A multi-token chunk: query ``i`` (position ``start + i``) sees keys ``0 .. start + i``."""
    count = len(chunk.token_ids)
    context = chunk.start + count
    key_slots = _long(_unrolled_tables([chunk], context, block_size), device)
    if chunk.start == 0:
        return AttentionGroup(key_slots, None, first=first, count=count, causal=True)
    limit = chunk.start + torch.arange(count)[:, None]
    mask = (torch.arange(context)[None, :] <= limit)[None, None].to(device)
    return AttentionGroup(key_slots, mask, first=first, count=count)


class ModelRunner:
    """Owns the model and its KV cache; one ``run`` per scheduler step."""

    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int) -> None:
        self.model = model
        self.block_size = block_size
        self.kv_cache = model.new_kv_cache(num_blocks * block_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _check(self, chunks: Sequence[ScheduledChunk]) -> None:
        if max(c.start + len(c.token_ids) for c in chunks) > self.model.config.max_position:
            raise InvalidArgument("position past the model's maximum")

    @torch.inference_mode()
    def run(self, chunks: Sequence[ScheduledChunk]) -> torch.Tensor:
        """Logits ``(rows, vocab)``: ``logit_rows(chunk)`` rows per chunk, in chunk order."""
        self._check(chunks)
        if len(chunks) == 1 and len(chunks[0].token_ids) == 1:
            logits = self._one_token(chunks[0])
            if logits is not None:
                return logits
        token_ids, batch, sample_rows = build_batch(chunks, self.block_size, self.device)
        hidden = self.model(token_ids, batch, self.kv_cache)
        if not sample_rows:
            return torch.empty((0, self.model.config.vocab_size), dtype=torch.float32)
        if len(sample_rows) < hidden.shape[0]:
            hidden = hidden[torch.tensor(sample_rows, dtype=torch.long, device=hidden.device)]
        return self.model.logits(hidden)

    def _one_token(self, chunk: ScheduledChunk) -> torch.Tensor | None:
        """``run`` of one one-token chunk (batch-1 decode) straight through
        ``model.decode_one``: its slot and context from the block table, no index tensors;
        None where the model has no such path."""
        position, size, table = chunk.start, self.block_size, chunk.block_table
        slot = table[position // size] * size + position % size
        key_slots = table_slots(table, position + 1, size)
        token = chunk.token_ids[0]
        return self.model.decode_one(token, position, slot, key_slots, self.kv_cache, chunk.sample)

    @torch.inference_mode()
    def run_all(self, chunk: ScheduledChunk) -> torch.Tensor:
        """Logits ``(len(chunk.token_ids), vocab)`` at every token of one chunk (verification)."""
        self._check([chunk])
        token_ids, batch, _ = build_batch([chunk], self.block_size, self.device)
        return self.model.logits(self.model(token_ids, batch, self.kv_cache))
