"""mini-llama: the Llama architecture exactly as transformers implements it (LlamaForCausalLM:
RoPE, RMSNorm, SwiGLU, grouped-query attention), small enough to train on a laptop CPU.

Unlike our other models, its folder is a plain Hugging Face folder (config.json,
generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json), written by
`save_pretrained` (maaslab.assets writes it): `AutoModelForCausalLM.from_pretrained(folder)` and
`AutoTokenizer.from_pretrained(folder)` load it with no code of ours, so what lesson 15 serves
is a standard language-model folder like any on the Hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from maaslab.errors import MaaslabError

if TYPE_CHECKING:
    from transformers import LlamaConfig


@dataclass(frozen=True)
class LlamaSpec:
    """Shape of a mini Llama; becomes a transformers LlamaConfig (see `to_hf`)."""

    vocab_size: int = 4096  # BPE tokens, the 256 bytes and the special tokens included
    context: int = 512  # longest sequence (max_position_embeddings); RoPE needs no table
    hidden: int = 256  # width of every token vector (Llama-2 7B: 4096)
    layers: int = 6  # decoder blocks (7B: 32)
    heads: int = 8  # query heads; hidden must divide by it (head size 32 here)
    kv_heads: int = 2  # key/value heads shared by groups of query heads (GQA; 7B: 32, 70B: 8)
    intermediate: int = 704  # SwiGLU's inner width, about 8/3 x hidden rounded up to 64
    rope_theta: float = 10_000.0  # RoPE's base wavelength
    bos_token_id: int = 1  # <|begin|> in maaslab.subwords' vocabulary
    eos_token_id: int = 2  # <|end_of_text|>
    pad_token_id: int = 0  # <|pad|>

    def __post_init__(self) -> None:
        sizes = (self.vocab_size, self.context, self.hidden, self.layers, self.heads)
        if min(*sizes, self.kv_heads, self.intermediate) < 1:
            raise MaaslabError("every size of a LlamaSpec must be positive")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise MaaslabError(
                f"hidden ({self.hidden}) must divide by heads ({self.heads}), and heads by "
                f"kv_heads ({self.kv_heads})"
            )
        if (self.hidden // self.heads) % 2:
            raise MaaslabError(
                f"the head size hidden / heads = {self.hidden // self.heads} must be even: RoPE "
                "rotates pairs of numbers; change hidden or heads"
            )
        if not self.rope_theta > 1.0:
            raise MaaslabError(f"rope_theta must be above 1, got {self.rope_theta}")
        special = (self.bos_token_id, self.eos_token_id, self.pad_token_id)
        if not all(0 <= i < self.vocab_size for i in special):
            raise MaaslabError(
                f"the special token ids {special} must lie in the vocabulary "
                f"(0..{self.vocab_size - 1})"
            )

    def to_hf(self) -> LlamaConfig:
        """The equivalent transformers LlamaConfig."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            max_position_embeddings=self.context,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            tie_word_embeddings=True,  # the output layer reuses the embedding matrix
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )

    def parameters(self) -> int:
        """Parameters of the model this spec builds (the tied output layer counted once)."""
        head = self.hidden // self.heads
        attention = self.hidden * head * (2 * self.heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.intermediate
        block = attention + mlp + 2 * self.hidden  # two RMSNorm weights
        return self.vocab_size * self.hidden + self.layers * block + self.hidden


class MiniLlama(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size): LlamaForCausalLM inside, so the
    shared training loop (maaslab.train) trains it like any of our models."""

    def __init__(self, spec: LlamaSpec) -> None:
        # transformers is imported here, not at the top: only building a Llama needs it.
        from transformers import LlamaForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        super().__init__()
        self.spec = spec
        self.llama = LlamaForCausalLM(spec.to_hf())  # lm_head shares its weight with embed_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids, T <= context -> (B, T, vocab_size) logits."""
        if x.shape[-1] > self.spec.context:
            raise MaaslabError(
                f"{x.shape[-1]} tokens exceed the model's context of {self.spec.context}; "
                "cut the input to its last context tokens"
            )
        return self.llama(input_ids=x, use_cache=False).logits  # (B, T, V)
