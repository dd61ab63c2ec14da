"""The model wrappers: a loaded model behind a small predict / generate / embed call.

`maaslab.auto.load(name or folder)` returns one of these; the app, the notebooks and the server
all call the same wrapper, so a name gives the same numbers everywhere.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from maaslab.data import DIGIT_PIXEL_MAX
from maaslab.errors import MaaslabError
from maaslab.evaluation import predict_proba
from maaslab.models.encoder import check_texts, nearest, tokenize
from maaslab.paths import MODELS_DIR
from maaslab.registry import load_model, read_config, read_metadata


@dataclass(frozen=True)
class Prediction:
    """What a classifier call returns."""

    probabilities: np.ndarray  # (N, C) float32, rows sum to 1
    labels: tuple[str, ...]  # the most likely class of each row
    seconds: float  # wall time of the call (model only, input checks included)
    truncated: tuple[bool, ...] = ()  # text models: True where a text was cut to max tokens


@dataclass(frozen=True)
class AttentionMap:
    """How every token of one text attends to the others, in every layer and head."""

    tokens: tuple[str, ...]  # the tokens as the model saw them
    weights: np.ndarray  # (layers, heads, T, T): row i = the weights token i gives each token
    truncated: bool  # True when the text was cut to the model's window first

    def head(self, layer: int, head: int, last: int | None = None) -> tuple[np.ndarray, tuple]:
        """(T, T) weights of one head (layer and head count from 1) and their tokens, kept to
        the `last` tokens when there are more (None: all)."""
        weights, tokens = self.weights[layer - 1, head - 1], self.tokens
        if last is not None and len(tokens) > last:
            weights, tokens = weights[-last:, -last:], tokens[-last:]
        return weights, tokens


@dataclass(frozen=True)
class Completion:
    """A whole continuation from a generator, with its cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of wall time."""
        return self.completion_tokens / max(self.seconds, 1e-9)


class DigitsClassifier:
    """digits-mlp / digits-cnn: (N, 64) pixels on sklearn's 0-16 scale -> 10 probabilities."""

    def __init__(self, name: str, folder: Path, device: str = "cpu") -> None:
        self.name, self.folder = name, folder
        self.model = load_model(folder, device=device)
        self.device = torch.device(device)
        self.metadata = read_metadata(folder)
        self.class_names = tuple(self.metadata.get("class_names", [str(i) for i in range(10)]))

    def predict(self, pixels: object) -> Prediction:
        """Class probabilities for a batch of 8x8 images given as 64 pixels each (0-16)."""
        try:
            x = np.asarray(pixels, dtype=np.float32)
        except (TypeError, ValueError):
            raise MaaslabError("pixels must be numbers") from None
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != 64 or x.shape[0] == 0:
            raise MaaslabError(f"pixels must have shape (N, 64) with N >= 1, got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise MaaslabError("pixels contain NaN or infinity")
        if x.min() < 0 or x.max() > DIGIT_PIXEL_MAX:
            raise MaaslabError(
                f"pixels must lie in 0..{DIGIT_PIXEL_MAX:g} (sklearn digits scale); "
                f"got {x.min():g}..{x.max():g}"
            )
        started = time.perf_counter()
        proba = predict_proba(self.model, x / DIGIT_PIXEL_MAX)
        labels = tuple(self.class_names[i] for i in proba.argmax(1))
        return Prediction(proba, labels, time.perf_counter() - started)


def _attention(model, ids: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    # Attention weights exist only in the eager implementation; sdpa (the default, faster)
    # never forms them. Switch for this one call, then back.
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    return torch.stack(out.attentions)[:, 0].float().cpu().numpy()  # (layers, heads, T, T)


def _encoder_attention(tokenizer, encoder, text: str, max_length: int) -> AttentionMap:
    batch, truncated = tokenize(tokenizer, check_texts([text]), max_length)
    ids = batch["input_ids"].to(encoder.device)
    weights = _attention(encoder, ids, torch.ones_like(ids))
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    return AttentionMap(tuple(tokens), weights, truncated[0])


class SentimentModel:
    """sentiment-minilm: texts -> probabilities [negative, positive] and a label per text."""

    def __init__(
        self,
        name: str,
        device: str = "cpu",
        folder: Path | None = None,
        model: torch.nn.Module | None = None,
    ) -> None:
        self.name, self.folder = name, Path(folder) if folder is not None else shipped_folder(name)
        # The adapters are folded into the encoder: same answers, no adapter cost per call.
        # A caller that already rebuilt the model (a compressed variant) passes it in.
        self.model = model if model is not None else load_model(self.folder, device=device).merge()
        self.device = torch.device(device)
        self.metadata = read_metadata(self.folder)
        self.class_names = tuple(self.model.config.labels)

    def predict(self, texts: list[str]) -> Prediction:
        """Class probabilities of each text; texts past max_length tokens are cut and flagged."""
        started = time.perf_counter()
        ids, truncated = self.model.encode(texts)
        proba = predict_proba(self.model, ids, batch_size=64)
        labels = tuple(self.class_names[i] for i in proba.argmax(1))
        return Prediction(proba, labels, time.perf_counter() - started, tuple(truncated))

    def attention(self, text: str) -> AttentionMap:
        """Attention weights of every MiniLM layer and head over the tokens of `text`."""
        return _encoder_attention(
            self.model.tokenizer, self.model.encoder, text, self.model.config.max_length
        )


class TextGenerator:
    """mini-gpt: a prompt -> a continuation, streamed one character-token at a time."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        from maaslab.textdata import CharTokenizer

        self.name, self.folder = name, shipped_folder(name)
        self.model = load_model(self.folder, device=device)
        self.device = torch.device(device)
        self.metadata = read_metadata(self.folder)
        self.tokenizer = CharTokenizer.from_dict(self.metadata["tokenizer"])
        self.context = self.model.config.context

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Iterator[str]:
        """New tokens as text, yielded as they are sampled (see maaslab.models.gpt.generate)."""
        from maaslab.models.gpt import generate

        return generate(
            self.model, self.tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed
        )

    def complete(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Completion:
        """The whole continuation at once, with token counts and time."""
        stream = self.generate(prompt, max_new_tokens, temperature, top_k, top_p, seed)
        started = time.perf_counter()
        pieces = list(stream)
        return Completion(
            "".join(pieces),
            len(self.tokenizer.encode(prompt)),
            len(pieces),
            time.perf_counter() - started,
        )

    def attention(self, text: str) -> AttentionMap:
        """Attention weights over the last `context` characters of `text` (causal: row i
        attends only to tokens 0..i)."""
        if not isinstance(text, str) or not text.strip():
            raise MaaslabError("the text is empty: type a few characters")
        ids = self.tokenizer.encode(text)
        window = ids[-self.context :]
        weights = _attention(self.model.gpt, torch.tensor([window], device=self.device))
        tokens = tuple(self.tokenizer.decode([i]) for i in window)
        return AttentionMap(tokens, weights, len(ids) > self.context)


CAUSAL_LM_TYPES = ("llama", "mistral", "qwen2", "gpt2")  # the families maaslab.llm runs
TOKENIZER_FILE = "tokenizer.json"  # a fast tokenizer, as transformers saves it


class ChatModel:
    """A Hugging Face causal-LM folder (mini-llama, a local Llama or GPT-2): its weights, its
    tokenizer and chat template, its context and the tokens that end a text.

    The server runs it through maaslab.llm's engine (paged KV cache, continuous batching);
    this wrapper turns text into token ids and back.
    """

    def __init__(self, name: str, folder: Path | None = None, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.folder = Path(folder) if folder is not None else shipped_folder(name)
        if not (self.folder / TOKENIZER_FILE).is_file():
            raise MaaslabError(f"{self.folder} has no {TOKENIZER_FILE}: save the tokenizer with it")
        model_type = read_config(self.folder)["model_type"]  # also refuses pickled weights
        if model_type not in CAUSAL_LM_TYPES:
            raise MaaslabError(
                f"{self.folder} holds a {model_type!r} model; language models load for "
                f"{', '.join(CAUSAL_LM_TYPES)}"
            )
        self.device = torch.device(device)
        # float32, as the engine's own loader (LLMEngine.from_folder) reads it: same numbers.
        self.model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=torch.float32)
        self.model = self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.context = self.model.config.max_position_embeddings  # GPT-2: n_positions
        eos = self.model.generation_config.eos_token_id
        self.eos_token_ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)

    @property
    def chat_template(self) -> str | None:
        """The tokenizer's Jinja chat template (None: the model takes plain text only)."""
        return self.tokenizer.chat_template

    def encode(self, text: str) -> list[int]:
        """A prompt's token ids, special tokens included (a start-of-text token if it has one)."""
        # verbose=False: a prompt past the context is the server's 400 to give, not a warning
        return list(self.tokenizer(text, verbose=False)["input_ids"])

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat rendered by the model's template, with the assistant's turn opened.

        Parameters
        ----------
        messages : {"role": "system" | "user" | "assistant", "content": text} in order.
        """
        if not self.chat_template:
            raise MaaslabError(
                f"{self.name} has no chat template (tokenizer_config.json); send plain text to "
                "/v1/completions instead"
            )
        try:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_dict=False
            )
        except Exception as err:  # the template's own checks (jinja2 raise_exception)
            raise MaaslabError(f"{self.name}'s chat template refused the messages: {err}") from None
        return list(ids)

    def decoder(self) -> TextDecoder:
        """A decoder that turns this model's tokens into text one token at a time."""
        return TextDecoder(self.tokenizer)


class TextDecoder:
    """Token ids -> text, one token at a time, never splitting a character.

    A byte-level token can hold part of a UTF-8 character (one byte of "é"); decoded alone it
    is U+FFFD. So the text is sent only when the decoded tail grows and ends cleanly, and each
    step decodes only the tokens since the last clean point (plus the previous piece, which
    gives a tokenizer the context to space words as it would in one decode), as vLLM and TGI
    do. The pieces joined equal `tokenizer.decode(all_tokens, skip_special_tokens=True)`.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0  # ids[prefix:read] is the piece sent last

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        """The new text after `token` ("" while a character is still incomplete)."""
        self.ids.append(int(token))
        before = self._text(self.ids[self.prefix : self.read])
        after = self._text(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is left at the end (an incomplete character shows as U+FFFD)."""
        before = self._text(self.ids[self.prefix : self.read])
        after = self._text(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]


class TextEmbedder:
    """minilm-embed: texts -> unit-length MiniLM-L6 sentence embeddings (384 numbers each)."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        from maaslab.models.encoder import SentenceEncoder

        self.name = name
        self.encoder = SentenceEncoder("minilm", device=device)
        self.device = self.encoder.device

    def embed(self, texts: list[str]):
        """Embeddings of `texts`: an Encoded (embeddings, truncated, seconds)."""
        return self.encoder.encode(texts)

    def attention(self, text: str) -> AttentionMap:
        """Attention weights of every MiniLM layer and head over the tokens of `text`."""
        return _encoder_attention(
            self.encoder.tokenizer, self.encoder.model, text, self.encoder.max_length
        )


def nearest_sentences(
    query: np.ndarray, corpus: np.ndarray, sentences: list[str], k: int = 5
) -> pd.DataFrame:
    """The k sentences whose embeddings are closest to the first query row, most similar first.

    Parameters
    ----------
    query : (1, C) or (C,) unit-length embedding of the query.
    corpus : (N, C) unit-length embeddings of `sentences`.
    sentences : the N sentences embedded in `corpus`.
    k : how many rows (at most N).
    """
    order, scores = nearest(query, corpus, k=k)
    return pd.DataFrame(
        {"cosine similarity": scores[0].round(3), "sentence": [sentences[i] for i in order[0]]}
    )


def image_to_pixels(data: bytes) -> np.ndarray:
    """An uploaded picture (PNG, JPEG, ...) -> 64 pixels on the digits' 0-16 scale.

    The picture is made grey, inverted when its background is light (the digits are light
    strokes on black), shrunk to 8x8 by averaging and stretched so its darkest cell is 0 and
    its brightest 16. Anything that is not a readable image raises a MaaslabError.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            grey = np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BOX), float)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise MaaslabError(
            "that file is not an image this page can read (try a PNG or JPEG)"
        ) from None
    if np.median(grey) > 127:  # dark strokes on a light background
        grey = 255.0 - grey
    low, high = grey.min(), grey.max()
    if high - low < 1:
        raise MaaslabError("the image is one flat colour: there is no digit to read")
    return ((grey - low) / (high - low) * DIGIT_PIXEL_MAX).astype(np.float32).reshape(64)


def paint(pixels: np.ndarray, index: int) -> np.ndarray:
    """Pixels after a click on cell `index`: each click darkens it a step, 0 -> 8 -> 16 -> 0."""
    if not 0 <= index < 64:
        raise MaaslabError(f"a digit has 64 cells (0-63), not {index}")
    out = np.array(pixels, dtype=np.float32).reshape(64)
    half = DIGIT_PIXEL_MAX / 2
    out[index] = {0.0: half, half: DIGIT_PIXEL_MAX}.get(float(out[index]), 0.0)
    return out


def shipped_folder(name: str) -> Path:
    """The folder of shipped model `name` in assets/models; if missing, how to rebuild it."""
    folder = MODELS_DIR / name
    if not folder.is_dir():
        raise MaaslabError(
            f"{folder} is missing: run `python -m maaslab assets {name}` to rebuild it"
        )
    return folder
