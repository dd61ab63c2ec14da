"""The engine's own forward pass: a transformers causal LM run over a paged KV cache.

transformers' `generate()` keeps one contiguous cache tensor per sequence, padded to the longest
one in the batch. Here the cache is a pool of fixed-size blocks shared by every sequence
(`KVPool`), and a sequence finds its keys and values through its block table: token position p
lives in slot `table[p // block_size] * block_size + p % block_size`. One call of
`PagedModel.forward` runs a *step*: any mix of sequences, each contributing a chunk of new
tokens (a whole or partial prompt, or one token of decoding), flattened into one (T, hidden)
matrix so every weight matrix is read once per step for all of them.

Per layer: normalise, project the new tokens to q, k, v (RoPE for Llama, learned positions for
GPT-2), write k and v into their slots, then let each chunk's queries attend to its sequence's
keys gathered through the block table (causal within the chunk), project back, add, MLP.

Batch invariance: a CPU matrix product takes a different code path for fewer than 16 rows, and
a sum over more keys can group its terms differently, either of which changes the last bits of
a result. Every product here gets at least MIN_ROWS rows (padding with zeros), and attention
sums its keys in fixed tiles of KEY_TILE, so a token's numbers depend neither on the other
sequences in the step nor on how its own sequence was cut into chunks: a seeded request gives
the same tokens alone or batched, and after a preemption (tests check both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from maaslab.errors import MaaslabError

LLAMA_FAMILY = ("llama", "mistral", "qwen2")  # the same module layout as LlamaForCausalLM
GPT2_FAMILY = ("gpt2",)
MIN_ROWS = 16  # CPU products with fewer rows take another path: pad to this (see above)
KEY_TILE = 16  # keys per tile of the attention sum (see _tiled_softmax_values)


@dataclass(frozen=True)
class Chunk:
    """One sequence's share of a step: new tokens at positions start..start+len-1."""

    token_ids: list[int]  # the tokens whose KV this step computes
    start: int  # position of the first of them (tokens before it are in the cache)
    table: list[int]  # the sequence's block table, covering start + len(token_ids) tokens
    logits: int = 1  # logits wanted for this many final tokens (speculative checks want k + 1)


def _tiled_softmax_values(scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(scores) @ v, summed tile by tile in a fixed order.

    scores (..., rows, L) with -inf where a key is hidden, v (..., L, hd), L a multiple of
    KEY_TILE. A query's answer then depends only on the tiles up to its own position: each
    tile's products have the same shape whatever L is, later tiles add exact zeros, and the
    tiles are added one after the other (a sum over an outer dimension, which torch runs in
    order). Whether the keys were gathered for a decode step or a long chunk, the query gets
    the same bits.
    """
    *lead, rows, length = scores.shape
    tiles = length // KEY_TILE
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))  # the max is exact in any order
    weights = weights.view(*lead, rows, tiles, KEY_TILE).transpose(-3, -2)  # (..., tiles, rows, T)
    total = weights.sum(-1).sum(-2).unsqueeze(-1)  # (..., rows, 1)
    values = v.view(*lead, tiles, KEY_TILE, v.shape[-1])
    parts = weights @ values  # (..., tiles, rows, hd): one product per tile
    return parts.sum(-3) / total  # (..., rows, hd)


def _rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    # x followed by zero rows, `rows` in all.
    return torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])


def _padded(fn, x: torch.Tensor) -> torch.Tensor:
    # fn on x's rows, computed as if there were at least MIN_ROWS of them (batch invariance).
    rows = x.shape[0]
    if rows >= MIN_ROWS:
        return fn(x)
    pad = x.new_zeros((MIN_ROWS - rows, *x.shape[1:]))
    return fn(torch.cat([x, pad]))[:rows]


@dataclass(frozen=True)
class _Group:
    """Chunks whose attention runs as one batched product in a step."""

    spans: list[tuple[int, int]]  # each chunk's rows in the step's (T, ...) matrices
    rows: int  # query rows per chunk, padded
    single: torch.Tensor | None  # (B,) the row of each one-token chunk (decoding), else None
    where: torch.Tensor  # (B, L) the cache slot of every key of every chunk
    hidden: torch.Tensor  # (B, 1, group * rows, L) True where a query may not see a key


class KVPool:
    """Keys and values of every layer, in num_blocks blocks of block_size token slots."""

    def __init__(
        self,
        layers: int,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        shape = (layers, num_blocks * block_size, kv_heads, head_dim)  # (L, slots, nkv, hd)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.num_blocks = num_blocks

    @property
    def nbytes(self) -> int:
        """Memory the pool holds."""
        return self.k.numel() * self.k.element_size() * 2

    def slots(self, table: list[int], positions: torch.Tensor) -> torch.Tensor:
        """The slot of each token position of a sequence with this block table."""
        blocks = torch.as_tensor(table, dtype=torch.long, device=positions.device)
        return blocks[positions // self.block_size] * self.block_size + positions % self.block_size


class PagedModel:
    """A Llama- or GPT-2-family causal LM (transformers weights) run over a KVPool."""

    def __init__(self, hf_model: Any) -> None:
        config = hf_model.config
        self.family = config.model_type
        if self.family not in LLAMA_FAMILY + GPT2_FAMILY:
            raise MaaslabError(
                f"the engine runs Llama-family ({', '.join(LLAMA_FAMILY)}) and GPT-2 models, "
                f"not {self.family!r}"
            )
        self.hf = hf_model.eval()
        self.vocab_size = config.vocab_size
        if self.family in LLAMA_FAMILY:
            self.heads = config.num_attention_heads
            self.kv_heads = config.num_key_value_heads
            self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
            self.layers = config.num_hidden_layers
            self.context = config.max_position_embeddings
        else:
            self.heads = self.kv_heads = config.n_head
            self.head_dim = config.n_embd // config.n_head
            self.layers = config.n_layer
            self.context = config.n_positions
        param = next(hf_model.parameters())
        self.dtype, self.device = param.dtype, param.device

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu") -> PagedModel:
        """Load a transformers model folder (config.json + model.safetensors)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        return cls(model.to(device))

    def new_pool(self, num_blocks: int, block_size: int) -> KVPool:
        """An empty KV pool shaped for this model."""
        return KVPool(
            self.layers,
            num_blocks,
            block_size,
            self.kv_heads,
            self.head_dim,
            self.dtype,
            self.device,
        )

    @torch.inference_mode()
    def forward(self, chunks: list[Chunk], pool: KVPool, all_logits: bool = False) -> torch.Tensor:
        """Run one step; write the chunks' keys and values into `pool`.

        Returns the logits of each chunk's last `chunk.logits` tokens, stacked in chunk order
        (one row per chunk by default), or with `all_logits` those of every new token.
        """
        lengths = [len(c.token_ids) for c in chunks]
        if min(lengths, default=0) < 1:
            raise MaaslabError("every chunk of a step needs at least one token")
        ids = torch.tensor([t for c in chunks for t in c.token_ids], device=self.device)
        positions = torch.cat(
            [
                torch.arange(c.start, c.start + n, device=self.device)
                for c, n in zip(chunks, lengths, strict=True)
            ]
        )
        if int(positions.max()) >= self.context:
            raise MaaslabError(f"a sequence is longer than the model's context of {self.context}")
        slots = torch.cat(
            [
                pool.slots(c.table, torch.arange(c.start, c.start + n, device=self.device))
                for c, n in zip(chunks, lengths, strict=True)
            ]
        )
        plans = self._plan(chunks, lengths, pool)
        if self.family in LLAMA_FAMILY:
            x = self._llama(ids, positions, slots, plans, pool)
        else:
            x = self._gpt2(ids, positions, slots, plans, pool)
        if not all_logits:
            ends = torch.tensor(lengths, device=self.device).cumsum(0)
            rows = [
                torch.arange(end - min(c.logits, n), end, device=self.device)
                for c, n, end in zip(chunks, lengths, ends.tolist(), strict=True)
            ]
            x = x[torch.cat(rows)]
        head = self.hf.lm_head
        return _padded(head, x).float()

    # --- attention over the paged cache ----------------------------------------------------------

    def _plan(self, chunks: list[Chunk], lengths: list[int], pool: KVPool) -> list[_Group]:
        """How this step's attention runs, worked out once for every layer: decoding sequences
        (one query each) together in one batched product, each prompt chunk on its own."""
        starts = torch.tensor([0, *lengths]).cumsum(0).tolist()
        decoding = [i for i, n in enumerate(lengths) if n == 1]
        members = ([decoding] if decoding else []) + [[i] for i, n in enumerate(lengths) if n > 1]
        group = self.heads // self.kv_heads
        plans = []
        for idx in members:
            # Query rows: the heads sharing a key head are stacked as rows, and the rows padded
            # so every product has at least MIN_ROWS of them (see the module notes).
            rows = max(max(lengths[i] for i in idx), -(-MIN_ROWS // group))
            ends = [chunks[i].start + lengths[i] for i in idx]  # keys 0..end-1 are cached now
            length = -(-max(ends) // KEY_TILE) * KEY_TILE  # keys, padded to whole tiles
            positions = torch.arange(length, device=self.device)
            # Slots of each chunk's keys; past its end, slot 0 stands in (those keys are hidden).
            where = torch.stack(
                [
                    torch.where(
                        positions < end,
                        pool.slots(chunks[i].table, positions.clamp(max=end - 1)),
                        0,
                    )
                    for i, end in zip(idx, ends, strict=True)
                ]
            )  # (B, L)
            first = torch.tensor([chunks[i].start for i in idx], device=self.device)
            query_pos = first[:, None] + torch.arange(rows, device=self.device)[None, :]
            hidden = positions[None, None, :] > query_pos[:, :, None]  # (B, rows, L) causal
            hidden = hidden[:, None, None].expand(-1, 1, group, -1, -1).flatten(2, 3)
            spans = [(starts[i], starts[i + 1]) for i in idx]
            single = torch.tensor([a for a, _ in spans], device=self.device)
            single = single if all(b - a == 1 for a, b in spans) else None
            plans.append(_Group(spans, rows, single, where, hidden))
        return plans

    def _attend(
        self, q: torch.Tensor, layer: int, plans: list[_Group], pool: KVPool
    ) -> torch.Tensor:
        """The attention outputs (T, nh * hd) of the step's queries q (T, nh, hd)."""
        out = q.new_empty(q.shape, dtype=torch.float32)
        group = self.heads // self.kv_heads
        for plan in plans:
            if plan.single is not None:  # decoding: one query per chunk, gathered at once
                qs = q.new_zeros((len(plan.spans), plan.rows, *q.shape[1:]))
                qs[:, 0] = q[plan.single]
            else:
                qs = torch.stack([_rows(q[a:b], plan.rows) for a, b in plan.spans])
            batch = qs.shape[0]  # qs: (B, rows, nh, hd)
            # (B, nkv, group * rows, hd): query head h = kv head h // group, row-stacked
            qs = qs.view(batch, plan.rows, self.kv_heads, group, self.head_dim)
            qs = qs.permute(0, 2, 3, 1, 4).reshape(batch, self.kv_heads, -1, self.head_dim)
            k = pool.k[layer][plan.where].permute(0, 2, 3, 1)  # (B, nkv, hd, L)
            v = pool.v[layer][plan.where].transpose(1, 2)  # (B, nkv, L, hd)
            scores = (qs @ k) * self.head_dim**-0.5  # (B, nkv, group * rows, L)
            scores = scores.masked_fill(plan.hidden, float("-inf")).float()
            answer = _tiled_softmax_values(scores, v.float())  # (B, nkv, group * rows, hd)
            answer = answer.view(batch, self.kv_heads, group, plan.rows, self.head_dim)
            answer = answer.permute(0, 3, 1, 2, 4).reshape(batch, plan.rows, -1, self.head_dim)
            if plan.single is not None:
                out[plan.single] = answer[:, 0].float()
                continue
            for b, (start, end) in enumerate(plan.spans):
                out[start:end] = answer[b, : end - start]
        return out.flatten(1).to(q.dtype)  # (T, nh * hd)

    # --- the two families ------------------------------------------------------------------------

    def _llama(self, ids, positions, slots, plans, pool) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        body = self.hf.model
        x = body.embed_tokens(ids)  # (T, H)
        cos, sin = body.rotary_emb(x, positions[None, :])  # (1, T, hd) each
        cos, sin = cos[0], sin[0]
        for i, block in enumerate(body.layers):
            attn = block.self_attn
            h = block.input_layernorm(x)
            q = _padded(attn.q_proj, h).view(-1, self.heads, self.head_dim)
            k = _padded(attn.k_proj, h).view(-1, self.kv_heads, self.head_dim)
            v = _padded(attn.v_proj, h).view(-1, self.kv_heads, self.head_dim)
            q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
            pool.k[i, slots], pool.v[i, slots] = k, v
            x = x + _padded(attn.o_proj, self._attend(q, i, plans, pool))
            x = x + _padded(block.mlp, block.post_attention_layernorm(x))
        return body.norm(x)

    def _gpt2(self, ids, positions, slots, plans, pool) -> torch.Tensor:
        body = self.hf.transformer
        x = body.wte(ids) + body.wpe(positions)
        width = self.heads * self.head_dim
        for i, block in enumerate(body.h):
            h = block.ln_1(x)
            q, k, v = _padded(block.attn.c_attn, h).split(width, dim=-1)
            q, k, v = (t.reshape(-1, self.heads, self.head_dim) for t in (q, k, v))
            pool.k[i, slots], pool.v[i, slots] = k, v
            x = x + _padded(block.attn.c_proj, self._attend(q, i, plans, pool))
            x = x + _padded(block.mlp, block.ln_2(x))
        return body.ln_f(x)


def greedy_reference(hf_model: Any, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' own greedy generate() with its KV cache: the oracle the engine matches."""
    ids = torch.tensor([prompt_ids], device=next(hf_model.parameters()).device)
    with torch.inference_mode():
        out = hf_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt_ids) :].tolist()
