"""Lesson 15: the paged KV cache's block manager — who owns which slots of the cache.

A language model keeps the keys and values (KV) of every token it has seen, in every layer, so
that each new token attends to them without recomputing them. Reserving one contiguous region
per request for its longest possible length wastes most of it; instead the cache is cut into
`num_blocks` fixed-size *blocks* of `block_size` token slots each, like pages of memory:

- a **block table** per sequence maps logical block i (its tokens i*block_size up to
  (i+1)*block_size - 1) to a physical block, so token position p lives in slot
  `table[p // block_size] * block_size + p % block_size` of the cache tensors;
- a **free list** holds the physical blocks nobody uses; a sequence takes blocks from it as it
  grows, one block at a time, and gives them all back when it finishes or is preempted;
- a **reference count** per block says how many tables hold it: with prefix caching two
  sequences that start with the same tokens (a shared system prompt) point at the *same*
  physical blocks, computed once.

**Prefix caching.** Once the engine has written the KV of a full block, the block is registered
under a hash of (the previous block's hash, this block's token ids). Because each hash folds in
its parent's, equal hashes mean equal *whole prefixes* — which is what a token's KV depends on.
A new prompt walks its own chain of hashes and reuses every block it finds, stopping at the
first miss; the engine then computes only the tokens after the hits. At least one prompt token
is always computed, since the model needs it to produce the next token's logits. Only
computed, full blocks are ever shared, so a shared block is never written to again.

A freed block that holds a registered prefix stays findable while it waits in the free list: a
later request with the same prefix takes it straight back. When fresh blocks are needed, the
free list hands out the least recently freed block first, and a cached one handed out is
*evicted*: its hash is forgotten. A sequence frees its blocks last-to-first, so the tail of a
prefix is evicted before its head (a head without its tail is still useful; not the reverse).

**Memory.** Each token stores a key and a value vector per layer and KV head::

    bytes per token = 2 x layers x kv_heads x head_dim x dtype_bytes
    bytes per block = block_size x bytes per token
    num_blocks      = KV budget in bytes // bytes per block

Llama-2-7B in fp16: 2 x 32 x 32 x 128 x 2 = 524,288 bytes = 0.5 MiB per token, so 4,096
tokens of context take 2 GiB. Grouped-query attention (fewer KV heads) divides this directly.

The design follows vLLM's block manager (PagedAttention) and nano-vllm's, reduced to
bookkeeping: this module never touches a tensor.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from maaslab.errors import MaaslabError


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of KV cache one token takes: 2 (K and V) x layers x kv_heads x head_dim x dtype_bytes.

    Parameters
    ----------
    layers : transformer blocks, each with its own K and V.
    kv_heads : key/value heads per layer (fewer than query heads under grouped-query attention).
    head_dim : width of one head's key (and value) vector.
    dtype_bytes : bytes per number: 4 for fp32, 2 for fp16/bf16, 1 for fp8.
    """
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def block_hash(parent: bytes, token_ids: Sequence[int]) -> bytes:
    """Hash of a full block: its parent block's hash (b"" for the first block) and its tokens."""
    # A cryptographic hash, not Python's hash(): a collision would hand one request another
    # request's KV, and Python's integer hashes are easy to collide on purpose.
    return hashlib.sha256(parent + array("q", token_ids).tobytes()).digest()


@dataclass
class BlockStats:
    """A snapshot of the cache for metrics and the Engine view."""

    num_blocks: int  # physical blocks in the cache
    used: int  # blocks held by at least one sequence
    free: int  # blocks in the free list (used + free == num_blocks)
    cached_free: int  # free blocks still holding a reusable prefix
    prefix_queries: int  # full prompt blocks looked up in the prefix cache (tokens: x block_size)
    prefix_hits: int  # of those, blocks found and reused

    @property
    def hit_rate(self) -> float:
        """Share of looked-up prompt blocks served from the prefix cache (0 with no lookups)."""
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0


class BlockManager:
    """Hands out the cache's blocks to sequences: block tables, free list, refcounts, prefixes.

    Parameters
    ----------
    num_blocks : physical blocks in the cache (see the module docstring for the formula).
    block_size : token slots per block; vLLM uses 16.
    prefix_caching : share computed prompt blocks between sequences with the same prefix.
    """

    def __init__(self, num_blocks: int, block_size: int, *, prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise MaaslabError(
                f"num_blocks={num_blocks} and block_size={block_size} must both be at least 1: "
                "give the cache room for at least one block of one token"
            )
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self._refs = [0] * num_blocks  # tables holding each physical block
        self._hash: list[bytes | None] = [None] * num_blocks  # registered prefix hash, if any
        # Free blocks, least recently freed first. An OrderedDict is a queue that can also
        # remove a block from its middle, when a prefix hit takes a cached block back.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cache: dict[bytes, int] = {}  # prefix hash -> the physical block holding it
        self._tables: dict[int, list[int]] = {}  # seq_id -> block table
        self._chains: dict[int, list[bytes]] = {}  # seq_id -> hashes of its computed full blocks
        self._queries = 0
        self._hits = 0

    @property
    def num_free(self) -> int:
        """Blocks in the free list, cached prefixes included (they are evicted on demand)."""
        return len(self._free)

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold num_tokens tokens: ceil(num_tokens / block_size)."""
        return -(-num_tokens // self.block_size)

    # --- admitting a sequence ---------------------------------------------------------------

    def _lookup(self, token_ids: Sequence[int]) -> tuple[list[int], list[bytes]]:
        # Walk the prompt's hash chain through the cache; stop at the first miss. Only blocks
        # lying within the first len - 1 tokens may hit, so one token is always left to compute.
        blocks: list[int] = []
        chain: list[bytes] = []
        if not self.prefix_caching:
            return blocks, chain
        parent = b""
        for i in range((len(token_ids) - 1) // self.block_size):
            parent = block_hash(parent, token_ids[i * self.block_size : (i + 1) * self.block_size])
            block = self._cache.get(parent)
            if block is None:
                break
            blocks.append(block)
            chain.append(parent)
        return blocks, chain

    def can_allocate(self, token_ids: Sequence[int]) -> bool:
        """Whether the free list can hold a new sequence's prompt, counting prefix-cache hits."""
        hits, _ = self._lookup(token_ids)
        # A hit on a block in use costs nothing; a hit on a cached free block takes it out of
        # the free list just as a fresh block would.
        shared = sum(1 for b in hits if self._refs[b] > 0)
        return self.blocks_needed(len(token_ids)) - shared <= self.num_free

    def allocate(self, seq_id: int, token_ids: Sequence[int]) -> int:
        """Give a new sequence blocks for its whole prompt; return how many tokens are cached.

        The returned count is a multiple of block_size, at most len(token_ids) - 1: the engine
        computes the prompt from that position on. Callers check `can_allocate` first.
        """
        if seq_id in self._tables:
            raise MaaslabError(f"sequence {seq_id} already has blocks: free it before re-admitting")
        if not token_ids:
            raise MaaslabError(f"sequence {seq_id} has an empty prompt: give it at least one token")
        if not self.can_allocate(token_ids):
            raise MaaslabError(
                f"not enough free blocks for sequence {seq_id}'s {len(token_ids)} prompt tokens "
                f"({self.num_free} free): check can_allocate before admitting"
            )
        hits, chain = self._lookup(token_ids)
        if self.prefix_caching:
            self._queries += (len(token_ids) - 1) // self.block_size
            self._hits += len(hits)
        for block in hits:
            if self._refs[block] == 0:
                del self._free[block]  # a cached free block comes back into use
            self._refs[block] += 1
        fresh = self.blocks_needed(len(token_ids)) - len(hits)
        self._tables[seq_id] = hits + [self._take_free() for _ in range(fresh)]
        self._chains[seq_id] = chain
        return len(hits) * self.block_size

    def _take_free(self) -> int:
        # The least recently freed block; if it still holds a cached prefix, evict that prefix.
        block, _ = self._free.popitem(last=False)
        old = self._hash[block]
        if old is not None:
            del self._cache[old]
            self._hash[block] = None
        self._refs[block] = 1
        return block

    # --- growing a sequence -----------------------------------------------------------------

    def _table(self, seq_id: int) -> list[int]:
        table = self._tables.get(seq_id)
        if table is None:
            raise MaaslabError(f"sequence {seq_id} has no blocks: allocate it first")
        return table

    def can_append(self, seq_id: int, num_tokens: int) -> bool:
        """Whether the sequence's table can grow to hold num_tokens tokens in total."""
        missing = self.blocks_needed(num_tokens) - len(self._table(seq_id))
        return missing <= self.num_free

    def append(self, seq_id: int, num_tokens: int) -> None:
        """Grow the sequence's table to hold num_tokens tokens in total (never shrinks it)."""
        table = self._table(seq_id)
        if not self.can_append(seq_id, num_tokens):
            raise MaaslabError(
                f"no free block left to grow sequence {seq_id} to {num_tokens} tokens: "
                "preempt a sequence (free it) and re-admit it later"
            )
        while len(table) < self.blocks_needed(num_tokens):
            table.append(self._take_free())

    def mark_computed(self, seq_id: int, token_ids: Sequence[int], num_computed: int) -> None:
        """Record that the KV of the first num_computed tokens is written; register full blocks.

        token_ids are all the sequence's tokens so far (prompt + output). Each block that is now
        full and not yet registered gets its prefix hash; if an equal prefix is already
        registered under another block (both computed it at once), the first one stays the
        cached copy and this block stays private.
        """
        table = self._table(seq_id)
        if not 0 <= num_computed <= min(len(token_ids), len(table) * self.block_size):
            raise MaaslabError(
                f"sequence {seq_id}: num_computed={num_computed} must lie within its "
                f"{len(token_ids)} tokens and its {len(table)} blocks"
            )
        if not self.prefix_caching:
            return
        chain = self._chains[seq_id]
        for i in range(len(chain), num_computed // self.block_size):
            parent = chain[-1] if chain else b""
            h = block_hash(parent, token_ids[i * self.block_size : (i + 1) * self.block_size])
            chain.append(h)
            block = table[i]
            if h not in self._cache and self._hash[block] is None:
                self._cache[h] = block
                self._hash[block] = h

    # --- releasing and inspecting -------------------------------------------------------------

    def table(self, seq_id: int) -> list[int]:
        """The sequence's block table: logical block i -> physical block (a copy)."""
        return list(self._table(seq_id))

    def free(self, seq_id: int) -> None:
        """Release a sequence's blocks (finish, abort, preemption); unknown ids are a no-op."""
        table = self._tables.pop(seq_id, None)
        self._chains.pop(seq_id, None)
        if table is None:
            return  # e.g. an abort that arrives after the sequence finished
        for block in reversed(table):  # tail first, so the tail is evicted before the head
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None

    def owners(self) -> dict[int, list[int]]:
        """Physical block -> ids of the sequences using it (shared prefixes have several)."""
        result: dict[int, list[int]] = {}
        for seq_id, table in self._tables.items():
            for block in table:
                result.setdefault(block, []).append(seq_id)
        return result

    def shared_blocks(self) -> set[int]:
        """Blocks held by more than one sequence."""
        return {b for b, refs in enumerate(self._refs) if refs > 1}

    def cached_free_blocks(self) -> set[int]:
        """Free blocks that still hold a reusable prefix (the Engine view draws them)."""
        return {b for b in self._free if self._hash[b] is not None}

    def stats(self) -> BlockStats:
        """A snapshot of block usage and prefix-cache hits."""
        return BlockStats(
            num_blocks=self.num_blocks,
            used=self.num_blocks - self.num_free,
            free=self.num_free,
            cached_free=sum(1 for b in self._free if self._hash[b] is not None),
            prefix_queries=self._queries,
            prefix_hits=self._hits,
        )

    def check(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (tests call it after a step)."""

        def require(ok: bool, message: str) -> None:
            if not ok:  # raised explicitly so the check also runs under python -O
                raise AssertionError(message)

        holders = [0] * self.num_blocks
        for seq_id, table in self._tables.items():
            require(len(set(table)) == len(table), f"sequence {seq_id} holds a block twice")
            for block in table:
                holders[block] += 1
        require(holders == self._refs, f"refcounts {self._refs} != table counts {holders}")
        zero = {b for b, refs in enumerate(self._refs) if refs == 0}
        require(set(self._free) == zero, f"free list {list(self._free)} != unheld {sorted(zero)}")
        used = sum(1 for refs in self._refs if refs > 0)
        require(used + self.num_free == self.num_blocks, "used + free != num_blocks")
        for h, block in self._cache.items():
            require(self._hash[block] == h, f"cache entry points at block {block} of another hash")
        registered = sum(1 for h in self._hash if h is not None)
        require(registered == len(self._cache), "a block holds a hash the cache does not know")
        for block in self.shared_blocks():
            require(self._hash[block] is not None, f"block {block} is shared but holds no prefix")
        for seq_id, chain in self._chains.items():
            table = self._tables[seq_id]
            require(len(chain) <= len(table), f"sequence {seq_id} hashed more blocks than it has")
            for h, block in zip(chain, table, strict=False):
                stored = self._hash[block]
                require(
                    stored in (None, h), f"sequence {seq_id} holds block {block} of another prefix"
                )
