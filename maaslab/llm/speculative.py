"""Speculative decoding: a small draft model guesses k tokens, the big model checks them at once.

Decoding is memory-bound: one step reads every weight of the model to produce one token per
sequence. A draft model that shares the tokenizer is cheap to run k times; the target model
then scores the last token and the k guesses in a single pass (k + 1 positions, the weights
read once) and keeps the longest prefix it agrees with, plus one token of its own:

- greedy requests keep a guess when it is the target's own argmax at that position, so the
  output is *identical* to decoding without a draft;
- sampled requests keep guess d with probability min(1, p(d) / q(d)) (p the target's
  distribution, q the draft's) and, at the first rejection, sample from max(0, p - q)
  renormalised, which leaves the output distributed exactly as the target's (Leviathan et al.,
  2023; Chen et al., 2023).

With an acceptance rate a per guess, a target pass yields on average
(1 - a**(k + 1)) / (1 - a) tokens instead of one (`expected_tokens`).
"""

from __future__ import annotations

import torch

from maaslab.errors import MaaslabError
from maaslab.models.gpt import next_token_probs


def expected_tokens(acceptance: float, k: int) -> float:
    """Mean tokens one target pass yields with k guesses each accepted with this probability."""
    if not 0.0 <= acceptance <= 1.0 or k < 0:
        raise MaaslabError(f"acceptance must be in [0, 1] and k >= 0, got {acceptance}, {k}")
    if acceptance == 1.0:
        return float(k + 1)
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


def verify_greedy(target_logits: torch.Tensor, guesses: list[int]) -> tuple[list[int], int]:
    """(tokens to emit, guesses accepted) for a greedy request.

    target_logits (k + 1, V): the target's logits at the last token and at each guess.
    """
    choices = target_logits.argmax(-1).tolist()
    accepted = 0
    while accepted < len(guesses) and guesses[accepted] == choices[accepted]:
        accepted += 1
    return [*guesses[:accepted], choices[accepted]], accepted


def verify_sampled(
    target_logits: torch.Tensor,
    draft_probs: list[torch.Tensor],
    guesses: list[int],
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
) -> tuple[list[int], int]:
    """(tokens to emit, guesses accepted) for a sampled request, by rejection sampling.

    draft_probs[i] is the distribution the draft sampled guesses[i] from.
    """
    for i, guess in enumerate(guesses):
        p = next_token_probs(target_logits[i], temperature, top_k, top_p)
        q = draft_probs[i]
        if float(torch.rand((), generator=generator)) * float(q[guess]) <= float(p[guess]):
            continue  # kept with probability min(1, p / q)
        residual = (p - q).clamp(min=0)
        residual = residual / residual.sum() if residual.sum() > 0 else p
        return [*guesses[:i], int(torch.multinomial(residual, 1, generator=generator))], i
    last = next_token_probs(target_logits[len(guesses)], temperature, top_k, top_p)
    bonus = int(torch.multinomial(last, 1, generator=generator))
    return [*guesses, bonus], len(guesses)
