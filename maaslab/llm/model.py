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

Batch invariance: a CPU matrix product with a long inner dimension (the hidden width) takes a
different code path for fewer than 16 rows, one with a short inner dimension (a head, a tile of
keys) for a single query, and a sum over more keys can group its terms differently; each
changes the last bits of a result. So a step's rows are padded once to at least MIN_ROWS (the
padding rows are computed and never read), attention's products get at least MIN_QUERIES
queries, and attention sums its keys in fixed tiles of KEY_TILE: a token's numbers depend
neither on the other sequences in the step nor on how its own sequence was cut into chunks. A
seeded request gives the same tokens alone or batched, and after a preemption (tests check
both, and tests/unit/test_llm_engine.py checks the products' behaviour itself). The thresholds
depend on the CPU, even with the same MKL: on Intel Xeons with AVX-512 a lone query was the only
exception, on an AMD EPYC with AVX-512 every product of fewer than 12 queries took another path
(and a linear layer of fewer than 12 rows). 16 covers both; another BLAS may need others.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from maaslab.errors import MaaslabError

LLAMA_FAMILY = ("llama", "mistral", "qwen2")  # the same module layout as LlamaForCausalLM
GPT2_FAMILY = ("gpt2",)
MIN_ROWS = 16  # CPU products with fewer rows take another path: pad to this (see above)
MIN_QUERIES = 16  # attention's products with fewer queries take another path (see above)
KEY_TILE = 16  # keys per tile of the attention sum (see _tiled_softmax_values)


@dataclass(frozen=True)
class Chunk:
    """One sequence's share of a step: new tokens at positions start..start+len-1."""

    token_ids: list[int]  # the tokens whose KV this step computes
    start: int  # position of the first of them (tokens before it are in the cache)
    table: list[int]  # the sequence's block table, covering start + len(token_ids) tokens
    logits: int = 1  # logits wanted for this many final tokens (speculative checks want k + 1)


def _tiled_softmax_values(scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(scores) @ v for every query, summed tile by tile in a fixed order.

    scores (..., L, rows): a column per query, -inf where a key is hidden; v (..., L, hd); L a
    multiple of KEY_TILE. A query's answer then depends only on the tiles up to its own
    position: each tile's products have the same shape whatever L is, later tiles add exact
    zeros, and the tiles are added one after the other (a sum over an outer dimension, which
    torch runs in order). Whether the keys were gathered for a decode step or a long chunk, the
    query gets the same bits. Keys along the rows let every tile be a plain view: no copies.
    Returns (..., rows, hd).
    """
    *lead, length, rows = scores.shape
    tiles = length // KEY_TILE
    weights = (scores - scores.amax(-2, keepdim=True)).exp_()  # the max is exact in any order
    weights = weights.view(*lead, tiles, KEY_TILE, rows)
    total = weights.sum(-2).sum(-2).unsqueeze(-1)  # (..., rows, 1)
    values = v.view(*lead, tiles, KEY_TILE, v.shape[-1])
    parts = weights.transpose(-1, -2) @ values  # (..., tiles, rows, hd): one product per tile
    return parts.sum(-3) / total  # (..., rows, hd)


@dataclass(frozen=True)
class _Group:
    """Chunks whose attention runs as one batched product in a step."""

    batch: int  # chunks in the group (B)
    rows: int  # query rows per chunk, padded (a padding row repeats the chunk's last query)
    queries: torch.Tensor  # (B * rows,) the step row each query row reads
    blocks: torch.Tensor  # (B * L / block_size,) each chunk's cache blocks (0 past its end)
    hidden: torch.Tensor  # (B, L, group * rows) -inf where a query may not see a key, else 0


@dataclass(frozen=True)
class _Plan:
    """How one step runs, worked out once for every layer."""

    tokens: int  # the step's new tokens (T); the step's matrices have max(T, MIN_ROWS) rows
    slots: torch.Tensor  # (T,) the cache slot of each new token's key and value
    groups: list[_Group]
    order: torch.Tensor  # (rows,) where each step row's answer lies in the groups' stacked rows


@dataclass(frozen=True)
class _Fused:
    """A Llama block's projections of one input, as one matrix each (made once, at load).

    One product instead of three (q, k, v) and two (gate, up) per layer; each output column
    is the same dot product as before, so the results are the separate products' own bits
    (tests check). These are copies: the transformers model keeps its weights as they were.
    """

    qkv: torch.Tensor  # (nh * hd + 2 * nkv * hd, H): q_proj, k_proj, v_proj stacked
    qkv_bias: torch.Tensor | None  # their biases stacked (Qwen2 has them), else None
    gate_up: torch.Tensor  # (2 * intermediate, H): gate_proj, up_proj stacked

    @classmethod
    def of(cls, block: Any) -> _Fused:
        """The fused projections of one transformers decoder layer."""
        attn, mlp = block.self_attn, block.mlp
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        bias = None
        if attn.q_proj.bias is not None:
            bias = torch.cat([p.bias.detach() for p in projections])
        return cls(
            torch.cat([p.weight.detach() for p in projections]),
            bias,
            torch.cat([mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach()]),
        )


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
        # A layer's keys of one KV head lie together, so the keys a step gathers are laid out
        # (nkv, B, L, hd) as they come, the shape the attention products read.
        shape = (layers, kv_heads, num_blocks * block_size, head_dim)  # (layers, nkv, slots, hd)
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

    def blocks(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's keys and values as (nkv, num_blocks, block_size * hd): a row a block."""
        shape = (self.k.shape[1], self.num_blocks, -1)
        return self.k[layer].view(shape), self.v[layer].view(shape)


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
        param = next(hf_model.parameters())
        self.dtype, self.device = param.dtype, param.device
        if self.family in LLAMA_FAMILY:
            self.heads = config.num_attention_heads
            self.kv_heads = config.num_key_value_heads
            self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
            self.layers = config.num_hidden_layers
            self.context = config.max_position_embeddings
            self.final_norm = hf_model.model.norm
            with torch.inference_mode():  # RoPE's angles of every position, computed once
                at = torch.arange(self.context, device=self.device)[None, :]
                cos, sin = hf_model.model.rotary_emb(param, at)  # (1, context, hd) each
            self.rope = cos[0, :, None], sin[0, :, None]  # (context, 1, hd): every head alike
            self.fused = [_Fused.of(block) for block in hf_model.model.layers]
        else:
            self.heads = self.kv_heads = config.n_head
            self.head_dim = config.n_embd // config.n_head
            self.layers = config.n_layer
            self.context = config.n_positions
            self.final_norm = hf_model.transformer.ln_f

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
        if max(c.start + n for c, n in zip(chunks, lengths, strict=True)) > self.context:
            raise MaaslabError(f"a sequence is longer than the model's context of {self.context}")
        plan = self._plan(chunks, lengths, pool)
        # Padding the step once to MIN_ROWS rows gives every product below enough rows; the
        # padding rows (token 0 at position 0) are computed alongside and never read.
        pad = [0] * (MIN_ROWS - plan.tokens)
        ids = torch.tensor([t for c in chunks for t in c.token_ids] + pad, device=self.device)
        positions = [p for c, n in zip(chunks, lengths, strict=True) for p in _span(c.start, n)]
        positions = torch.tensor(positions + pad, device=self.device)
        if self.family in LLAMA_FAMILY:
            x = self._llama(ids, positions, plan, pool)
        else:
            x = self._gpt2(ids, positions, plan, pool)
        if all_logits:
            pick = list(range(plan.tokens))
        else:
            ends = itertools.accumulate(lengths)
            pick = [
                row
                for c, n, end in zip(chunks, lengths, ends, strict=True)
                for row in range(end - min(c.logits, n), end)
            ]
        x = x[torch.tensor(pick + [0] * (MIN_ROWS - len(pick)), device=self.device)]
        return self.hf.lm_head(self.final_norm(x))[: len(pick)].float()

    # --- attention over the paged cache ----------------------------------------------------------

    def _plan(self, chunks: list[Chunk], lengths: list[int], pool: KVPool) -> _Plan:
        """How this step's attention runs, worked out once for every layer: chunks of like
        lengths (1, 2, 3-4, 5-8, ... tokens) batched together, each group in one product."""
        size = pool.block_size
        tile = math.lcm(KEY_TILE, size)  # keys gathered per chunk: whole blocks, whole tiles
        group = self.heads // self.kv_heads
        starts = list(itertools.accumulate(lengths, initial=0))
        members: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            members.setdefault((n - 1).bit_length(), []).append(i)
        groups, order, stacked = [], [0] * max(starts[-1], MIN_ROWS), 0
        for idx in members.values():
            # Queries: the heads sharing a key head are put side by side, and the rows padded so
            # every product has at least MIN_QUERIES of them (see the module notes).
            rows = max(-(-MIN_QUERIES // group), *(lengths[i] for i in idx))
            width = max(chunks[i].start + lengths[i] for i in idx)  # keys 0..width-1 cached now
            width = -(-width // tile) * tile  # keys (L), padded to whole tiles and blocks
            queries, query_pos, blocks = [], [], []
            for i in idx:
                c, n = chunks[i], lengths[i]
                last = [min(r, n - 1) for r in range(rows)]
                queries += [starts[i] + r for r in last]
                query_pos.append([c.start + r for r in last])
                table = c.table[: width // size]
                blocks += table + [0] * (width // size - len(table))  # hidden past the end
                order[starts[i] : starts[i] + n] = range(stacked, stacked + n)
                stacked += rows
            keys = torch.arange(width, device=self.device)
            query_pos = torch.tensor(query_pos, device=self.device)
            # Causal, added to the scores (much faster than masked_fill): (B, L, group * rows)
            hidden = torch.where(keys[None, :, None] > query_pos[:, None, :], float("-inf"), 0.0)
            hidden = hidden[:, :, None].expand(-1, -1, group, -1).flatten(2, 3).to(self.dtype)
            as_tensor = partial(torch.tensor, device=self.device)
            groups.append(_Group(len(idx), rows, as_tensor(queries), as_tensor(blocks), hidden))
        slots = [
            c.table[p // size] * size + p % size
            for c, n in zip(chunks, lengths, strict=True)
            for p in _span(c.start, n)
        ]
        as_tensor = partial(torch.tensor, device=self.device)
        return _Plan(starts[-1], as_tensor(slots), groups, as_tensor(order))

    def _attend(self, q: torch.Tensor, layer: int, plan: _Plan, pool: KVPool) -> torch.Tensor:
        """The attention outputs (rows, nh * hd) of the step's queries q (rows, nh, hd)."""
        nkv, group, hd = self.kv_heads, self.heads // self.kv_heads, self.head_dim
        keys, values = pool.blocks(layer)
        q = q * hd**-0.5  # the scores' scale, on the smaller factor
        answers = []
        for g in plan.groups:
            # (nkv, B, hd, group * rows): query head h = kv head h // group, its rows side by side
            qs = q[g.queries].view(g.batch, g.rows, nkv, group, hd)
            qs = qs.permute(2, 0, 4, 3, 1).reshape(nkv, g.batch, hd, -1)
            k = keys.index_select(1, g.blocks).view(nkv, g.batch, -1, hd)  # (nkv, B, L, hd)
            v = values.index_select(1, g.blocks).view(nkv, g.batch, -1, hd)
            scores = (k @ qs).add_(g.hidden)  # (nkv, B, L, group * rows)
            scores = scores.float()
            answer = _tiled_softmax_values(scores, v.float())  # (nkv, B, group * rows, hd)
            answer = answer.view(nkv, g.batch, group, g.rows, hd).permute(1, 3, 0, 2, 4)
            answers.append(answer.reshape(g.batch * g.rows, -1))  # (B * rows, nh * hd)
        answers = answers[0] if len(answers) == 1 else torch.cat(answers)
        return answers[plan.order].to(q.dtype)

    # --- the two families ------------------------------------------------------------------------

    def _llama(self, ids, positions, plan, pool) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import rotate_half

        body = self.hf.model
        x = body.embed_tokens(ids)  # (rows, H)
        cos, sin = self.rope[0][positions], self.rope[1][positions]  # (rows, 1, hd) each
        nh, nkv = self.heads, self.kv_heads
        for i, (block, fused) in enumerate(zip(body.layers, self.fused, strict=True)):
            h = block.input_layernorm(x)
            qkv = F.linear(h, fused.qkv, fused.qkv_bias).view(-1, nh + 2 * nkv, self.head_dim)
            qk, v = qkv[:, : nh + nkv], qkv[:, nh + nkv :]
            qk = (qk * cos) + (rotate_half(qk) * sin)  # RoPE on the q and k heads at once
            self._store(pool, i, plan, qk[:, nh:], v)
            x = x + block.self_attn.o_proj(self._attend(qk[:, :nh], i, plan, pool))
            gate, up = F.linear(block.post_attention_layernorm(x), fused.gate_up).chunk(2, -1)
            x = x + block.mlp.down_proj(block.mlp.act_fn(gate).mul_(up))
        return x

    def _gpt2(self, ids, positions, plan, pool) -> torch.Tensor:
        body = self.hf.transformer
        x = body.wte(ids) + body.wpe(positions)
        width = self.heads * self.head_dim
        for i, block in enumerate(body.h):
            h = block.ln_1(x)
            q, k, v = block.attn.c_attn(h).split(width, dim=-1)
            q, k, v = (t.reshape(-1, self.heads, self.head_dim) for t in (q, k, v))
            self._store(pool, i, plan, k, v)
            x = x + block.attn.c_proj(self._attend(q, i, plan, pool))
            x = x + block.mlp(block.ln_2(x))
        return x

    @staticmethod
    def _store(pool: KVPool, layer: int, plan: _Plan, k: torch.Tensor, v: torch.Tensor) -> None:
        # The new tokens' keys and values into their slots (the padding rows are not stored).
        pool.k[layer].index_copy_(1, plan.slots, k[: plan.tokens].transpose(0, 1))
        pool.v[layer].index_copy_(1, plan.slots, v[: plan.tokens].transpose(0, 1))


def _span(start: int, count: int) -> range:
    return range(start, start + count)


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
