"""A character-level text corpus for the mini GPT: CPython's own help pages, offline.

The corpus is the help text behind `help("if")`, `help("FORMATTING")` and friends, which ships
inside every CPython install as `pydoc_data.topics`: 79 topics, about 465,000 characters of
English prose and Python code, 103 distinct characters. Nothing is downloaded and every machine
with the same Python version sees the same text.

Why characters and not sub-word tokens (BPE, as GPT-2 uses)? A character tokenizer has no
vocabulary to train: its vocabulary *is* the set of characters in the corpus, so it can be read
in one line, never meets an out-of-vocabulary word (any new word is spelled from known
characters) and needs an embedding table of only ~100 rows. BPE packs about 4 characters into one
token, so the same context window sees 4x more text and training is cheaper per character, but it
needs a merges table learned from a large corpus and a 50,000-row embedding that would dwarf a
model this small. For a model that trains on a laptop CPU in minutes, characters win.

`load_text_dataset` cuts the text into windows of `context` characters; the target of each
window is the same window shifted by one character (predict the next character at every
position). The train/test split is by position in the text: the last `test_fraction` of the
corpus is the test part, so no test character was ever seen in a training window; the last
tenth of the rest is the validation part, which the training loop's per-epoch loss is read on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from maaslab.data import Dataset
from maaslab.errors import MaaslabError
from maaslab.runtime import fast_mode

UNKNOWN = "\ufffd"  # the Unicode replacement character; it never occurs in the corpus
VAL_FRACTION = 0.1  # share of the training text held out for validation (its end)
FAST_MAX_WINDOWS = 2_000  # training windows kept in fast mode (CI, quick previews)


def load_corpus() -> str:
    """CPython's help topics joined in sorted topic order (the same text on every machine)."""
    from pydoc_data.topics import topics

    return "".join(topics[name] for name in sorted(topics))


@dataclass(frozen=True)
class CharTokenizer:
    """Characters <-> integer ids; the vocabulary is the corpus's sorted characters + UNKNOWN."""

    chars: str  # every known character once, sorted; id i is chars[i]; the last is UNKNOWN

    def __post_init__(self) -> None:
        if not self.chars or self.chars[-1] != UNKNOWN or len(set(self.chars)) != len(self.chars):
            raise MaaslabError(
                "a CharTokenizer needs distinct characters ending with the unknown marker "
                f"{UNKNOWN!r}; build one with CharTokenizer.from_text(text)"
            )

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the distinct characters of `text`."""
        return cls("".join(sorted(set(text) - {UNKNOWN})) + UNKNOWN)

    @property
    def vocab_size(self) -> int:
        """Number of ids, the unknown marker included."""
        return len(self.chars)

    @property
    def unknown_id(self) -> int:
        """The id every character outside the vocabulary maps to."""
        return len(self.chars) - 1

    def encode(self, text: str) -> list[int]:
        """Text -> ids; a character outside the vocabulary becomes `unknown_id`."""
        index = self._index
        return [index.get(ch, self.unknown_id) for ch in text]

    def decode(self, ids: list[int] | np.ndarray) -> str:
        """Ids -> text (the unknown id decodes to the marker character)."""
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in a model folder's config.json metadata."""
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        """Inverse of to_dict."""
        if (
            not isinstance(d, dict)
            or d.get("type") != "char"
            or not isinstance(d.get("chars"), str)
        ):
            raise MaaslabError(f"not a character tokenizer description: {str(d)[:80]}")
        return cls(d["chars"])

    @cached_property
    def _index(self) -> dict[str, int]:
        # char -> id, built once per tokenizer (cached_property works on frozen dataclasses)
        return {ch: i for i, ch in enumerate(self.chars)}


def _windows(ids: np.ndarray, context: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    # Every window holds context + 1 ids: the first `context` are the input, the last `context`
    # the target, so y[:, t] is the character that follows x[:, t].
    if len(ids) <= context:  # an empty stream (no validation part) has no windows
        empty = np.zeros((0, context), dtype=np.int64)
        return empty, empty.copy()
    spans = sliding_window_view(ids, context + 1)[::stride]
    return np.ascontiguousarray(spans[:, :-1]), np.ascontiguousarray(spans[:, 1:])


def split_windows(
    streams: Sequence[np.ndarray],
    context: int,
    stride: int,
    max_windows: int | None = None,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(X, y) next-token windows of each stream (training first, then held-out ones); with
    max_windows, a seeded subset of at most that many training windows and a tenth as many of
    each held-out stream's. Every array is its own writable copy."""
    rng = np.random.default_rng(seed)
    out = []
    for i, ids in enumerate(streams):
        X, y = _windows(ids, context, stride)
        if max_windows is not None:
            cap = max_windows if i == 0 else max(1, max_windows // 10)
            keep = np.sort(rng.permutation(len(X))[:cap])
            X, y = X[keep], y[keep]
        out.append(tuple(a if a.flags.writeable else a.copy() for a in (X, y)))
    return out


def language_model_dataset(
    name: str,
    train_ids: np.ndarray,
    test_ids: np.ndarray,
    context: int,
    stride: int,
    max_windows: int | None,
    seed: int,
    describe: Callable[[int, int], str],
    class_names: tuple[str, ...] = (),
    meta: dict | None = None,
    val_fraction: float = VAL_FRACTION,
) -> Dataset:
    """A language-model Dataset of next-token windows of a training and a test stream
    (split_windows); the last `val_fraction` of the training stream is the validation stream
    (0: no validation windows, for a recipe that chooses nothing).
    `describe(train windows, test windows)` words its description."""
    val_at = int(len(train_ids) * (1.0 - val_fraction))
    if val_at <= context or (val_fraction > 0 and len(train_ids) - val_at <= context):
        raise MaaslabError(
            f"context {context} is longer than the training or validation part of the "
            f"{len(train_ids):,}-token training stream; use fewer tokens per window"
        )
    # test before validation: the seeded subsets of train and test are those drawn before
    # there was a validation stream
    (X_train, y_train), (X_test, y_test), (X_val, y_val) = split_windows(
        (train_ids[:val_at], test_ids, train_ids[val_at:]), context, stride, max_windows, seed
    )
    return Dataset(
        name=name,
        task="language_model",
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        X_test=X_test,
        y_test=y_test,
        feature_names=tuple(f"t{i}" for i in range(context)),
        class_names=class_names,
        input_shape=(context,),
        description=describe(len(X_train), len(X_test)),
        meta={**(meta or {}), "val_fraction": val_fraction, "val_at": val_at},
    )


def load_text_dataset(
    context: int = 64,
    stride: int | None = None,
    test_fraction: float = 0.1,
    max_windows: int | None = None,
    seed: int = 0,
    val_fraction: float = VAL_FRACTION,
) -> Dataset:
    """The help-text corpus as next-character windows, split by position into train and test.

    Parameters
    ----------
    context : characters per window (the model's context length T).
    stride : characters between the starts of two windows; None -> context // 2 (windows
        overlap by half, so every character is predicted from a short and a long context).
    test_fraction : share of the text, taken from its end, held out for testing.
    max_windows : keep at most this many training windows (a random subset chosen by `seed`)
        and a tenth as many test windows; fast mode caps it at FAST_MAX_WINDOWS.
    seed : chooses the subset when max_windows cuts; the windows themselves are fixed.
    val_fraction : share of the training text, taken from its end, held out for validation;
        0 for none (the shipped mini-gpt's recipe, which chooses nothing on held-out text).
    """
    stride = max(1, context // 2) if stride is None else stride
    if not 1 <= context <= 4096 or not 1 <= stride <= 4096:
        raise MaaslabError(
            f"context and stride must be between 1 and 4096, got {context}, {stride}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise MaaslabError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if max_windows is not None and max_windows < 1:
        raise MaaslabError(f"max_windows must be at least 1, got {max_windows}")
    if fast_mode():
        max_windows = min(max_windows or FAST_MAX_WINDOWS, FAST_MAX_WINDOWS)

    text = load_corpus()
    tokenizer = CharTokenizer.from_text(text)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    cut = int(len(ids) * (1.0 - test_fraction))
    if min(cut, len(ids) - cut) <= context:
        raise MaaslabError(f"context {context} is longer than the train or test part of the text")
    return language_model_dataset(
        "python_help",
        ids[:cut],
        ids[cut:],
        context,
        stride,
        max_windows,
        seed,
        lambda train, test: (
            f"CPython help topics, {len(text):,} characters, {tokenizer.vocab_size - 1} distinct; "
            f"{train:,} train / {test:,} test windows of {context}"
        ),
        class_names=tuple(tokenizer.chars),
        meta={
            "tokenizer": tokenizer.to_dict(),
            "context": context,
            "stride": stride,
            "test_fraction": test_fraction,
            "max_windows": max_windows,
            "seed": seed,
            "split_at": cut,  # index of the first test character in the corpus
        },
        val_fraction=val_fraction,
    )
