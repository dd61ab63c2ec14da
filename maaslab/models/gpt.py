"""A mini GPT: Hugging Face's GPT-2 architecture at toy size, trained from scratch on characters.

The network is `transformers.GPT2LMHeadModel` built from a config (random weights, nothing
downloaded), so the code a learner reads here is the code behind real GPT-2 checkpoints. What is
written out by hand is the part a lesson is about: turning next-token logits into text with
temperature, top-k and nucleus (top-p) sampling, one token at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from maaslab.errors import MaaslabError
from maaslab.runtime import torch_threads
from maaslab.textdata import CharTokenizer

if TYPE_CHECKING:
    from transformers import GPT2Config

MAX_NEW_TOKENS = 1000  # the most tokens one generate() call may produce


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a mini GPT; saved as config.json next to the weights."""

    vocab_size: int = 104  # token ids 0..vocab_size-1 (the help-text corpus: 103 chars + unknown)
    context: int = 64  # longest sequence the model sees (GPT-2's n_positions)
    n_embd: int = 128  # width of every token vector (GPT-2 small: 768)
    n_layer: int = 4  # transformer blocks (GPT-2 small: 12)
    n_head: int = 4  # attention heads per block; n_embd must divide by it
    dropout: float = 0.1  # on embeddings, attention weights and residual branches, while training

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.context, self.n_embd, self.n_layer, self.n_head) < 1:
            raise MaaslabError("vocab_size, context, n_embd, n_layer and n_head must be positive")
        if self.n_embd % self.n_head:
            raise MaaslabError(
                f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise MaaslabError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_hf(self) -> GPT2Config:
        """The equivalent transformers GPT2Config."""
        # transformers is imported here, not at the top: it adds seconds to every
        # `import maaslab.models`, and only building a GPT needs it.
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=self.vocab_size,
            n_positions=self.context,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            resid_pdrop=self.dropout,
            embd_pdrop=self.dropout,
            attn_pdrop=self.dropout,
            bos_token_id=None,  # GPT-2's 50256 does not exist in a character vocabulary
            eos_token_id=None,
            use_cache=False,  # training and our sampler recompute the window; no KV cache kept
        )


class MiniGPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size), with GPT-2 blocks inside."""

    model_type: ClassVar[str] = "gpt"

    def __init__(self, config: GPTConfig) -> None:
        from transformers import GPT2LMHeadModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        super().__init__()
        self.config = config
        self.gpt = GPT2LMHeadModel(config.to_hf())  # lm_head shares its weight with wte
        # transformers picks the loss for `labels=` from the class name, which GPT2LMHeadModel
        # does not match (it warns); name the causal-LM loss it falls back to anyway.
        self.gpt.loss_type = "ForCausalLM"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids, T <= context -> (B, T, vocab_size) logits."""
        return self.gpt(input_ids=x).logits


# --- sampling ----------------------------------------------------------------------------------


def next_token_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Logits (V,) -> the sampling distribution (V,) after temperature, top-k and top-p.

    Every legal setting gives a distribution, however extreme: as temperature goes to 0 the
    distribution goes to the likeliest token (ties share), and a top_p smaller than the top
    token's probability keeps that token alone. Both limits are greedy decoding.

    Parameters
    ----------
    logits : the model's scores for the next token.
    temperature : divides the logits; < 1 sharpens the distribution, > 1 flattens it.
    top_k : keep only the k most likely tokens (None = all).
    top_p : keep the smallest set of most likely tokens whose probabilities sum to >= top_p
        (nucleus sampling; None or 1 = all).
    """
    # float64 and the top score at 0: dividing by a temperature of 1e-300 sends every other
    # score to -inf and keeps the top one at 0, so softmax never sees inf - inf.
    scores = logits.double()
    scores = (scores - scores.max()) / temperature
    if top_k is not None and top_k < scores.numel():
        kept = torch.topk(scores, top_k)
        scores = torch.full_like(scores, float("-inf")).scatter(0, kept.indices, kept.values)
    probs = torch.softmax(scores, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # A token is needed while the mass before it is still below top_p; the first always is.
        needed = (sorted_probs.cumsum(0) - sorted_probs) < top_p
        needed[0] = True
        probs = torch.zeros_like(probs).scatter(0, order[needed], sorted_probs[needed])
        probs = probs / probs.sum()
    return probs.float()


def _check_sampling(
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise MaaslabError("the prompt is empty: type a few characters for the model to continue")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise MaaslabError(
            f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}"
        )
    if not temperature > 0:
        raise MaaslabError(
            f"temperature must be above 0, got {temperature}; for the most likely token "
            "every time use top_k=1"
        )
    if top_k is not None and top_k < 1:
        raise MaaslabError(f"top_k must be at least 1 (or None for all tokens), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise MaaslabError(f"top_p must be in (0, 1], got {top_p}")


def generate(
    model: MiniGPT,
    tokenizer: CharTokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> Iterator[str]:
    """Continue `prompt`, yielding each new token as text as soon as it is sampled.

    The arguments are checked when generate() is called (a MaaslabError then, not on the first
    next()). Each step feeds the last `context` tokens, takes the logits at the final position,
    and samples from `next_token_probs`. A page can stream the pieces as they come.

    Parameters
    ----------
    model : a MiniGPT (any device; switched to eval mode).
    tokenizer : the tokenizer the model was trained with; unknown prompt characters map to its
        unknown id.
    prompt : text to continue.
    max_new_tokens : how many tokens to produce (1..MAX_NEW_TOKENS).
    temperature, top_k, top_p : see `next_token_probs`.
    seed : the same seed, prompt and settings give the same text; None = a fresh random draw.
    """
    _check_sampling(prompt, max_new_tokens, temperature, top_k, top_p)
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return _sample(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, generator)


@torch.no_grad()
def _sample_step(model: MiniGPT, ids: list[int]) -> torch.Tensor:
    # Only the last `context` tokens fit the position table: older ones fall out of the window.
    device = next(model.parameters()).device
    window = torch.tensor([ids[-model.config.context :]], dtype=torch.long, device=device)
    # One token of a small model is a few tiny matrix products: a second CPU thread saves
    # nothing, and when the cores are busy (a web server, a browser) it makes each op wait for
    # one. Measured in the app: 37 tokens/s on 2 threads, 400+ on one. Set per step, so the
    # rest of the process keeps its threads between tokens.
    with torch_threads(1 if device.type == "cpu" else None):
        return model(window)[0, -1].cpu()  # (V,) logits for the token after the window


def _sample(
    model: MiniGPT,
    tokenizer: CharTokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
) -> Iterator[str]:
    model.eval()
    ids = tokenizer.encode(prompt)
    for _ in range(max_new_tokens):
        probs = next_token_probs(_sample_step(model, ids), temperature, top_k, top_p)
        token = int(torch.multinomial(probs, 1, generator=generator))
        ids.append(token)
        yield tokenizer.decode([token])


def tokens_per_second(
    model: MiniGPT,
    tokenizer: CharTokenizer,
    prompt: str = "The ",
    max_new_tokens: int = 100,
    seed: int = 0,
) -> float:
    """Generation speed: new tokens per second of wall time for one sampled continuation."""
    stream = generate(model, tokenizer, prompt, max_new_tokens, seed=seed)
    started = time.perf_counter()
    count = sum(1 for _ in stream)
    return count / max(time.perf_counter() - started, 1e-9)
