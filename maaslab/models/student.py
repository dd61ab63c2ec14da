"""A small sentiment classifier: the first blocks of a MiniLM-shaped encoder and a linear head.

Knowledge distillation (maaslab.compress.distill) trains it to imitate the shipped
`sentiment-minilm`. It has the teacher's interface (`encode(texts)`, `forward(ids)` -> logits,
`config.labels`) and tokenizer, but `layers` transformer blocks instead of six, so a call costs
about layers / 6 of the teacher's. The blocks start as copies of chosen teacher blocks
(DistilBERT's initialisation); the word embeddings (30522 x 384, 47 MB in fp32) stay frozen at
the pretrained MiniLM values, so a model folder stores only the blocks, the small embedding
tables and the head, and reads the word table from the MiniLM wheel when it is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from maaslab.errors import MaaslabError
from maaslab.models.encoder import (
    MINILM,
    PooledClassifier,
    load_encoder,
    load_exact_state,
)

# Read from the pretrained encoder at build time and never trained, so never stored.
FROZEN = "encoder.embeddings.word_embeddings.weight"


@dataclass(frozen=True)
class StudentConfig:
    """Shape of a student classifier; saved as config.json next to its weights."""

    source: str = MINILM  # pretrained encoder giving the tokenizer, embeddings and initial blocks
    labels: tuple[str, ...] = ("negative", "positive")  # class names, index = label id
    layers: int = 3  # transformer blocks kept; MiniLM-L6 has 6
    # Which pretrained blocks the student's blocks start from (0-based); empty: evenly spaced,
    # as DistilBERT took every other block of BERT.
    init_blocks: tuple[int, ...] = ()
    max_length: int = 128  # longer texts are cut to this many tokens (and flagged as truncated)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))  # JSON gives back a list
        object.__setattr__(self, "init_blocks", tuple(int(b) for b in self.init_blocks))
        if len(self.labels) < 2:
            raise MaaslabError(f"a classifier needs at least 2 labels, got {self.labels}")
        if self.layers < 1:
            raise MaaslabError(f"a student needs at least 1 layer, got {self.layers}")
        if self.init_blocks and len(self.init_blocks) != self.layers:
            raise MaaslabError(
                f"init_blocks names {len(self.init_blocks)} block(s) for {self.layers} layer(s)"
            )
        if not 8 <= self.max_length <= 512:
            raise MaaslabError(f"max_length must be between 8 and 512, got {self.max_length}")


def spread(layers: int, total: int) -> tuple[int, ...]:
    """`layers` evenly spaced block indices out of `total`: 3 of 6 -> (0, 2, 4)."""
    if not 1 <= layers <= total:
        raise MaaslabError(f"a student of {layers} layers cannot be taken from {total} blocks")
    return tuple(round(i * total / layers) for i in range(layers))


class StudentClassifier(PooledClassifier):
    """Token ids (B, L), right-padded -> class logits (B, len(labels)), with `layers` blocks."""

    model_type: ClassVar[str] = "sentiment-student"

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer, pretrained = load_encoder(config.source, device="cpu")
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        total = pretrained.config.num_hidden_layers
        blocks = config.init_blocks or spread(config.layers, total)
        if max(blocks) >= total or min(blocks) < 0:
            raise MaaslabError(f"init_blocks {blocks} must lie in 0..{total - 1}")
        small = pretrained.config.__class__.from_dict(
            {**pretrained.config.to_dict(), "num_hidden_layers": config.layers}
        )
        small._attn_implementation = pretrained.config._attn_implementation
        # Mean pooling replaces BERT's pooler, so the student has none (0.15M weights fewer).
        self.encoder = type(pretrained)(small, add_pooling_layer=False).eval()
        self.encoder.embeddings.load_state_dict(pretrained.embeddings.state_dict())
        for mine, theirs in zip(self.encoder.encoder.layer, blocks, strict=True):
            mine.load_state_dict(pretrained.encoder.layer[theirs].state_dict())
        self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
        self.head = nn.Linear(small.hidden_size, len(config.labels))

    def copy_from(self, teacher: nn.Module) -> StudentClassifier:
        """Start from a trained classifier: its embeddings, chosen blocks and head; returns self.

        `teacher` is a merged SentimentClassifier (or anything with a BERT-style `encoder` and
        a `head` of the same widths).
        """
        blocks = self.config.init_blocks or spread(
            self.config.layers, len(teacher.encoder.encoder.layer)
        )
        # The word table stays the pretrained one: it is not stored, so it must not change.
        embeddings = teacher.encoder.embeddings.state_dict()
        embeddings.pop("word_embeddings.weight")
        self.encoder.embeddings.load_state_dict(embeddings, strict=False)
        for mine, theirs in zip(self.encoder.encoder.layer, blocks, strict=True):
            mine.load_state_dict(teacher.encoder.encoder.layer[theirs].state_dict())
        self.head.load_state_dict(teacher.head.state_dict())
        return self

    # What a model folder stores: everything but the frozen word table.
    def trained_state(self) -> dict[str, torch.Tensor]:
        """Every weight except the word embeddings (read from `config.source` when built)."""
        return {k: v for k, v in self.state_dict().items() if k != FROZEN}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load what `trained_state` saved; every expected tensor must be there, nothing else."""
        load_exact_state(self, state)

    def merge(self) -> StudentClassifier:
        """Nothing to fold (a student has no adapters); returns self, like the teacher's merge."""
        return self
