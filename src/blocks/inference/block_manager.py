"""Paged KV-cache bookkeeping: block tables, reference counts and the prefix cache.

Theory of operation: the KV cache is ``num_blocks`` fixed-size blocks of ``block_size`` token
slots each. A sequence owns a *block table*, the list of block ids that hold its tokens in
order: token ``p`` lives in slot ``p % block_size`` of block ``table[p // block_size]``. This
module only does the bookkeeping; the model runner owns the tensors. No torch here.

Prefix caching: once every token of a *full* block has been computed, the block is given a
hash chained over its tokens and all tokens before it,
``h_i = xxh3_64(h_{i-1} || tokens of block i)``, and registered in ``cached``. A new sequence
whose prompt starts with the same full blocks takes those blocks instead of fresh ones (its
reference count goes up) and skips computing them. A block is registered only once computed,
so a hit never reads KV that a chunked prefill has not written yet. The stored token tuple
is compared on every hit, so a hash collision costs a miss, never wrong output.

Reference counts: a block's count is the number of tables holding it. At zero it goes to
the free list, which is ordered least recently freed first; a freed block keeps its hash (and
so its cached KV) until it is taken for reuse, so a prefix can be hit after every sequence
that used it is gone. Tables are freed tail first, so the deepest blocks of a prefix are
evicted before the shallow ones that more prompts share.

Shared blocks are never written: a hit covers only full blocks, and a sequence always has at
least one token left to compute after its hits (its logits are needed), which lands in a
block of its own. So no copy-on-write is needed.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

from blocks.core.errors import Conflict, InvalidArgument, NotFound

__all__ = ["BlockManager", "BlockManagerStats", "block_hashes"]

MAX_BLOCKS = 1 << 24


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """Chained hashes of every full block of ``token_ids`` (stable across processes)."""
    hashes: list[int] = []
    parent = 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        chunk = token_ids[start : start + block_size]
        payload = struct.pack(f"<Q{block_size}q", parent, *chunk)
        parent = xxhash.xxh3_64_intdigest(payload)
        hashes.append(parent)
    return hashes


@dataclass(frozen=True, slots=True)
class BlockManagerStats:
    num_blocks: int
    num_free_blocks: int
    num_cached_blocks: int
    prefix_query_tokens: int
    prefix_hit_tokens: int

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_blocks

    @property
    def prefix_hit_rate(self) -> float:
        if self.prefix_query_tokens == 0:
            return 0.0
        return self.prefix_hit_tokens / self.prefix_query_tokens


class BlockManager:
    """Allocates KV blocks to sequences; see the module docstring for the rules."""

    def __init__(self, num_blocks: int, block_size: int, *, prefix_caching: bool = True) -> None:
        if not 1 <= num_blocks <= MAX_BLOCKS:
            raise InvalidArgument(f"num_blocks must be in [1, {MAX_BLOCKS}]")
        if not 1 <= block_size <= 1024:
            raise InvalidArgument("block_size must be in [1, 1024]")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.ref_counts = [0] * num_blocks
        # Free blocks, least recently freed first; value unused.
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self._tables: dict[int, list[int]] = {}
        # Per sequence: how many of its leading blocks are registered in the prefix cache.
        self._num_hashed: dict[int, int] = {}
        # Prefix cache: hash -> block, and what each registered block holds.
        self._cached: dict[int, int] = {}
        self._block_hash: dict[int, int] = {}
        self._block_tokens: dict[int, tuple[int, ...]] = {}
        self._prefix_query_tokens = 0
        self._prefix_hit_tokens = 0

    # ----------------------------------------------------------------- queries

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def has(self, seq_id: int) -> bool:
        return seq_id in self._tables

    def table(self, seq_id: int) -> list[int]:
        """The sequence's block table (a copy)."""
        try:
            return list(self._tables[seq_id])
        except KeyError:
            raise NotFound(f"sequence {seq_id} holds no blocks") from None

    def stats(self) -> BlockManagerStats:
        return BlockManagerStats(
            num_blocks=self.num_blocks,
            num_free_blocks=len(self._free),
            num_cached_blocks=len(self._cached),
            prefix_query_tokens=self._prefix_query_tokens,
            prefix_hit_tokens=self._prefix_hit_tokens,
        )

    def _lookup_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Blocks already holding the longest cached full-block prefix of ``token_ids``.

        At most ``len(token_ids) - 1`` tokens are covered, so one token is always left to
        compute.
        """
        if not self.prefix_caching or len(token_ids) <= 1:
            return []
        hits: list[int] = []
        usable = token_ids[: len(token_ids) - 1]
        for index, digest in enumerate(block_hashes(usable, self.block_size)):
            block = self._cached.get(digest)
            start = index * self.block_size
            expected = tuple(token_ids[start : start + self.block_size])
            if block is None or self._block_tokens.get(block) != expected:
                break
            hits.append(block)
        return hits

    def cached_prefix_tokens(self, token_ids: Sequence[int]) -> int:
        """How many leading tokens of ``token_ids`` the prefix cache holds now (no change)."""
        return len(self._lookup_prefix(token_ids)) * self.block_size

    def can_allocate(self, token_ids: Sequence[int], num_tokens: int) -> bool:
        """Whether ``allocate(seq, token_ids, num_tokens)`` would succeed now."""
        hits = self._lookup_prefix(token_ids)
        free_hits = sum(1 for b in hits if self.ref_counts[b] == 0)
        needed = max(self.blocks_for(num_tokens) - len(hits), 0)
        return needed <= len(self._free) - free_hits

    # ----------------------------------------------------------------- changes

    def allocate(self, seq_id: int, token_ids: Sequence[int], num_tokens: int) -> int:
        """Give a new sequence blocks for its first ``num_tokens`` tokens; return cached tokens.

        Reuses cached prefix blocks of ``token_ids`` first. Returns how many leading tokens
        are already computed (a multiple of ``block_size``). Raises ``Conflict`` and changes
        nothing if the sequence already has blocks or too few blocks are free.
        """
        if seq_id in self._tables:
            raise Conflict(f"sequence {seq_id} already holds blocks")
        if not 1 <= num_tokens <= len(token_ids):
            raise InvalidArgument("num_tokens must be in [1, len(token_ids)]")
        if not self.can_allocate(token_ids, num_tokens):
            raise Conflict("not enough free KV blocks")
        hits = self._lookup_prefix(token_ids)
        for block in hits:
            self._take(block)
        table = list(hits)
        cached_tokens = len(hits) * self.block_size
        while len(table) < self.blocks_for(max(num_tokens, cached_tokens)):
            table.append(self._take_fresh())
        self._tables[seq_id] = table
        self._num_hashed[seq_id] = len(hits)
        self._prefix_query_tokens += len(token_ids)
        self._prefix_hit_tokens += cached_tokens
        return cached_tokens

    def grow(self, seq_id: int, num_tokens: int) -> bool:
        """Make the table cover ``num_tokens`` tokens; False (nothing changed) if out of blocks."""
        table = self._tables.get(seq_id)
        if table is None:
            raise NotFound(f"sequence {seq_id} holds no blocks")
        needed = self.blocks_for(num_tokens) - len(table)
        if needed <= 0:
            return True
        if needed > len(self._free):
            return False
        for _ in range(needed):
            table.append(self._take_fresh())
        return True

    def mark_computed(self, seq_id: int, token_ids: Sequence[int], num_computed: int) -> None:
        """Register the sequence's full, computed blocks in the prefix cache."""
        table = self._tables.get(seq_id)
        if table is None:
            raise NotFound(f"sequence {seq_id} holds no blocks")
        if not self.prefix_caching:
            return
        full = min(num_computed // self.block_size, len(table))
        done = self._num_hashed[seq_id]
        if full <= done:
            return
        hashes = block_hashes(token_ids[: full * self.block_size], self.block_size)
        for index in range(done, full):
            block = table[index]
            digest = hashes[index]
            if digest not in self._cached and block not in self._block_hash:
                start = index * self.block_size
                self._cached[digest] = block
                self._block_hash[block] = digest
                self._block_tokens[block] = tuple(token_ids[start : start + self.block_size])
        self._num_hashed[seq_id] = full

    def free(self, seq_id: int) -> None:
        """Release every block of the sequence (tail first); unknown ids raise ``NotFound``."""
        table = self._tables.pop(seq_id, None)
        if table is None:
            raise NotFound(f"sequence {seq_id} holds no blocks")
        del self._num_hashed[seq_id]
        for block in reversed(table):
            assert self.ref_counts[block] > 0, "block freed twice"
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self._free[block] = None

    def _take(self, block: int) -> None:
        if self.ref_counts[block] == 0:
            del self._free[block]
        self.ref_counts[block] += 1

    def _take_fresh(self) -> int:
        block, _ = self._free.popitem(last=False)
        assert self.ref_counts[block] == 0
        digest = self._block_hash.pop(block, None)
        if digest is not None:
            del self._cached[digest]
            del self._block_tokens[block]
        self.ref_counts[block] = 1
        return block

    def check_invariants(self) -> None:
        """Assert the structural invariants (for tests and contracts)."""
        counts = [0] * self.num_blocks
        for table in self._tables.values():
            for block in table:
                counts[block] += 1
        assert counts == self.ref_counts, "reference counts disagree with tables"
        assert set(self._free) == {b for b in range(self.num_blocks) if counts[b] == 0}
        assert len(self._cached) == len(self._block_hash) == len(self._block_tokens)
        for digest, block in self._cached.items():
            assert self._block_hash[block] == digest
