"""Attention from scratch: scaled dot-product attention, multi-head attention, a Transformer block.

The model of lesson 07, top to bottom in one file (nanoGPT style). Masks are boolean and mean
"may attend" (True keeps a position), as in `torch.nn.functional.scaled_dot_product_attention`;
note that `nn.MultiheadAttention`'s `attn_mask` means the opposite (True blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maaslab.data import Dataset, token_sequences
from maaslab.errors import MaaslabError


def _check_mask(mask: torch.Tensor, scores: torch.Tensor) -> None:
    # A mask must broadcast to the scores (..., T_q, T_k); say which shapes would have worked.
    try:
        shape = torch.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError:
        shape = None
    if shape != scores.shape:
        raise MaaslabError(
            f"mask of shape {tuple(mask.shape)} does not fit attention scores of shape "
            f"{tuple(scores.shape)}: pass a (T_q, T_k) mask such as causal_mask(T), or one "
            "that broadcasts, e.g. (B, 1, 1, T_k) for padding"
        )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q Kᵀ / √d) V, written out; returns the output and the attention weights.

    Parameters
    ----------
    q, k, v: (..., T_q, d), (..., T_k, d), (..., T_k, d_v), e.g. (B, H, T, d).
    mask: boolean, broadcastable to (..., T_q, T_k); False positions get weight 0.
    dropout_p: dropout on the weights (training only); the returned weights are before dropout.
    """
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (..., T_q, T_k)
    if mask is not None:
        _check_mask(mask, scores)
        # -inf before the softmax gives exactly 0 after it (a row with no True stays NaN).
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1 over the keys
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights  # (..., T_q, d_v), (..., T_q, T_k)


def causal_mask(T: int) -> torch.Tensor:
    """(T, T) boolean mask, True on and below the diagonal: position t sees positions 0..t."""
    return torch.ones(T, T, dtype=torch.bool).tril()


@dataclass(frozen=True)
class AttentionConfig:
    """Shape of a multi-head attention layer and of a Transformer block."""

    embed_dim: int = 32  # C: width of every token vector; split evenly across the heads
    num_heads: int = 4  # H: heads, each attending with embed_dim // num_heads features
    dropout: float = 0.0  # on the attention weights and on each residual branch (training only)
    bias: bool = True  # biases in the projections, as in nn.MultiheadAttention by default
    fused_qkv: bool = True  # one Linear(C, 3C) for q, k, v (nanoGPT); False: three Linear(C, C)
    mlp_ratio: int = 4  # the block's MLP is C -> mlp_ratio * C -> C

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or self.num_heads < 1:
            raise MaaslabError("embed_dim and num_heads must be positive integers")
        if self.embed_dim % self.num_heads:
            raise MaaslabError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}: "
                "every head gets embed_dim // num_heads features, so pick e.g. "
                f"num_heads in {[h for h in range(1, 9) if self.embed_dim % h == 0]}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise MaaslabError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        """Features per head, d = C / H."""
        return self.embed_dim // self.num_heads


class MultiHeadAttention(nn.Module):
    """Project to q, k, v; attend in H heads side by side; concatenate; project back."""

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        self.config = config
        C, bias = config.embed_dim, config.bias
        if config.fused_qkv:
            self.qkv = nn.Linear(C, 3 * C, bias=bias)
        else:
            self.q_proj, self.k_proj, self.v_proj = (nn.Linear(C, C, bias=bias) for _ in "qkv")
        self.out_proj = nn.Linear(C, C, bias=bias)

    def qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (3C, C) weight and (3C,) bias of q, k, v stacked, whichever layout is used."""
        if self.config.fused_qkv:
            return self.qkv.weight, self.qkv.bias
        layers = (self.q_proj, self.k_proj, self.v_proj)
        bias = torch.cat([p.bias for p in layers]) if self.config.bias else None
        return torch.cat([p.weight for p in layers]), bias

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> output (B, T, C) and attention weights (B, H, T, T)."""
        if x.dim() != 3 or x.shape[-1] != self.config.embed_dim:
            raise MaaslabError(
                f"expected input (batch, tokens, {self.config.embed_dim}), got {tuple(x.shape)}"
            )
        B, T, C = x.shape
        H = self.config.num_heads
        weight, bias = self.qkv_weights()
        q, k, v = F.linear(x, weight, bias).split(C, dim=-1)  # 3 x (B, T, C)
        # (B, T, C) -> (B, H, T, d): each head works on its own slice of the features.
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        p = self.config.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, mask, p)  # (B, H, T, d)
        out = out.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.out_proj(out), weights


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        self.config = config
        C = config.embed_dim
        self.ln1 = nn.LayerNorm(C)
        self.attn = MultiHeadAttention(config)
        self.ln2 = nn.LayerNorm(C)
        self.mlp = nn.Sequential(
            nn.Linear(C, config.mlp_ratio * C),
            nn.GELU(),
            nn.Linear(config.mlp_ratio * C, C),
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> (B, T, C) and the attention weights (B, H, T, T)."""
        a, weights = self.attn(self.ln1(x), mask)
        x = x + self.drop(a)  # residual: the block only adds to what was there
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, weights


class SequenceClassifier(nn.Module):
    """Token + position embeddings -> blocks -> LayerNorm -> logits read at the last position.

    The small model the notebook trains on a toy task; its inputs are token ids, as floats
    when they come from a Dataset (maaslab.train feeds float32 rows).
    """

    def __init__(
        self,
        config: AttentionConfig,
        vocab_size: int,
        seq_len: int,
        n_classes: int,
        n_layers: int = 1,
    ) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(vocab_size, config.embed_dim)
        self.pos_emb = nn.Embedding(seq_len, config.embed_dim)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(n_layers))
        self.ln = nn.LayerNorm(config.embed_dim)
        self.head = nn.Linear(config.embed_dim, n_classes)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        ids = x.long()  # (B, T)
        h = self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[1], device=ids.device))
        maps = []
        for block in self.blocks:
            h, weights = block(h)  # (B, T, C), (B, H, T, T)
            maps.append(weights)
        return self.head(self.ln(h[:, -1])), maps  # (B, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, n_classes) logits."""
        return self._run(x)[0]

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights of every layer, (n_layers, B, H, T, T)."""
        return torch.stack(self._run(torch.as_tensor(x))[1])


def max_token_dataset(
    n_samples: int = 2000, seq_len: int = 8, vocab_size: int = 10, seed: int = 0
) -> Dataset:
    """Toy task: a sequence of digits 0..vocab_size-1, labelled with its largest digit."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, vocab_size, size=(n_samples, seq_len))
    y = X.max(axis=1)
    description = "sequences of random digits; the label is the largest digit"
    return token_sequences("max-token", X, y, vocab_size, description)


@torch.no_grad()
def copy_to_torch_mha(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    """An nn.MultiheadAttention(batch_first=True) holding our weights: the oracle for tests."""
    cfg = ours.config
    theirs = nn.MultiheadAttention(
        cfg.embed_dim, cfg.num_heads, dropout=cfg.dropout, bias=cfg.bias, batch_first=True
    )
    weight, bias = ours.qkv_weights()
    theirs.in_proj_weight.copy_(weight)  # torch stacks q, k, v in this order too
    theirs.out_proj.weight.copy_(ours.out_proj.weight)
    if cfg.bias:
        theirs.in_proj_bias.copy_(bias)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    return theirs.train(ours.training)
