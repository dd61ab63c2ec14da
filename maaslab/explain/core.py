"""What an explanation is made of: the model seen as a function, and the Attribution it returns.

Every method needs the same few things from a model, whatever it is (a torch MLP on table rows,
a CNN on 8x8 digits, MiniLM on text, a scikit-learn classifier): a batch of inputs -> class
probabilities, the input's features, what "a feature is absent" means, and, for the gradient
methods, the torch module behind it. `Explainable` holds exactly that, and counts every row the
model is asked about, which is how an explanation's cost is reported, shown as progress, and
cancelled.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from maaslab.errors import MaaslabError

KINDS = ("tabular", "image", "text")
CHUNK_ROWS = 4096  # rows per model call when a method asks for more at once
MAX_WORDS = 64  # the longest text (in words) an explanation takes; each word is a feature
WORD = re.compile(r"\w+")


class Cancelled(MaaslabError):
    """The explanation was stopped by its caller before it finished."""


@dataclass(frozen=True)
class Attribution:
    """How much each feature of one input moved the model's output for one class."""

    values: np.ndarray  # (F,) one number per feature (pixel, column, word), in probability units
    base_value: float  # the output with every feature absent (SHAP) or the surrogate's intercept
    prediction: float  # the model's probability of `target` for this input
    target: int  # the class explained
    target_name: str
    method: str  # a key of maaslab.explain.METHODS
    features: tuple[str, ...]  # feature names, pixel names ("r3c5") or the words of the text
    kind: str  # "tabular", "image" or "text"
    evaluations: int  # input rows the model was asked about
    seconds: float
    seed: int
    shape: tuple[int, ...] = ()  # the input's shape when it is not flat (8, 8 for a digit)

    @property
    def additivity_gap(self) -> float:
        """base + sum(values) - prediction: 0 for exact SHAP values, anything for LIME."""
        return float(self.base_value + self.values.sum() - self.prediction)

    def summary(self) -> str:
        """Its cost and its sum in one line: evaluations, seconds, base + sum vs prediction."""
        return (
            f"{self.evaluations:,} model evaluations · {self.seconds:.2f} s · "
            f"base {self.base_value:.3f} + sum {self.values.sum():+.3f} vs "
            f"prediction {self.prediction:.3f}"
        )

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k features with the largest absolute attribution, largest first."""
        order = np.argsort(-np.abs(self.values), kind="stable")[:k]
        return [(self.features[i], float(self.values[i])) for i in order]


def words_of(text: str) -> tuple[tuple[str, ...], list[tuple[int, int]]]:
    """The words of a text (runs of letters/digits) and their (start, end) character spans."""
    spans = [m.span() for m in WORD.finditer(text)]
    return tuple(text[a:b] for a, b in spans), spans


def drop_words(text: str, spans: list[tuple[int, int]], keep: np.ndarray) -> str:
    """`text` with the words whose `keep` is False cut out (punctuation and the rest kept)."""
    out, last = [], 0
    for (a, b), kept in zip(spans, keep, strict=True):
        out.append(text[last:a])
        if kept:
            out.append(text[a:b])
        last = b
    out.append(text[last:])
    joined = re.sub(r"\s{2,}", " ", "".join(out))
    return re.sub(r"\s+([.,;:!?])", r"\1", joined).strip()  # no space left before punctuation


@dataclass
class Explainable:
    """A classifier seen as a function from a batch of inputs to class probabilities.

    Build one with `tabular`, `image` or `text` (or `maaslab.explain.explainable`, which takes
    a shipped model's name). The inputs a method perturbs live in the space `predict` takes:
    table rows as the model reads them, digits as 64 pixels in 0..1, texts as strings.
    """

    kind: str
    predict_fn: Callable[[Any], np.ndarray]  # batch -> (N, C) probabilities
    class_names: tuple[str, ...]
    name: str = "model"
    feature_names: tuple[str, ...] = ()  # tabular columns (images and texts name their own)
    background: np.ndarray | None = None  # rows that stand for "typical input" (tabular, image)
    module: nn.Module | None = None  # inputs (N, F) float -> probabilities, for gradient methods
    image_shape: tuple[int, int] = (8, 8)
    tokenizer: Any = None  # text models: the model's tokenizer (the SHAP text masker may use it)
    # module -> predict_fn for a module of the same shape (the sanity check swaps in random weights)
    rebuild: Callable[[nn.Module], Callable[[Any], np.ndarray]] | None = None
    evaluations: int = 0
    budget: int = 0  # what the running explanation expects to use; for progress
    progress: Callable[[int, int], None] | None = None
    cancel: threading.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MaaslabError(f"unknown input kind {self.kind!r}: choose one of {KINDS}")

    # --- the counted model call ----------------------------------------------------------------

    def predict(self, batch: Any) -> np.ndarray:
        """Probabilities for a batch; counts the rows, reports progress, honours cancel.

        Large batches (KernelSHAP asks for tens of thousands of rows at once) run in chunks, so
        progress moves and a cancel takes effect within one chunk.
        """
        chunk = 64 if self.kind == "text" else CHUNK_ROWS
        out = []
        for start in range(0, len(batch), chunk):
            part = batch[start : start + chunk]
            self.count(len(part))
            out.append(np.asarray(self.predict_fn(part), dtype=np.float64))
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)))

    def count(self, rows: int) -> None:
        """Add `rows` model evaluations (gradient methods call this from a forward hook)."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("the explanation was cancelled")
        with self._lock:
            self.evaluations += rows
        if self.progress is not None:
            self.progress(self.evaluations, self.budget)

    def counted_module(self) -> nn.Module:
        """The torch module, wrapped so every forward pass is counted like a predict call."""
        if self.module is None:
            raise MaaslabError(
                f"{self.name} is not a torch model: gradient methods need one; use kernel_shap, "
                "permutation_shap or lime"
            )
        return _Counted(self.module, self)

    # --- inputs and features -------------------------------------------------------------------

    def check_input(self, x: Any) -> Any:
        """One input, checked for this model: a row, 64 pixels or a text."""
        if self.kind == "text":
            if not isinstance(x, str):
                raise MaaslabError("a text model explains one text (a string)")
            words, _ = words_of(x)
            if not words:
                raise MaaslabError("the text is empty: type a few words to explain")
            if len(words) > MAX_WORDS:
                raise MaaslabError(
                    f"the text has {len(words)} words; an explanation takes at most {MAX_WORDS} "
                    "(each word is a feature): shorten it"
                )
            return x
        try:
            row = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise MaaslabError("the input must be numbers") from None
        expected = self.n_features()
        if row.size != expected or row.ndim > 2 or (row.ndim == 2 and 1 not in row.shape[:1]):
            raise MaaslabError(
                f"{self.name} takes one input of {expected} numbers"
                + (
                    f" ({self.image_shape[0]}x{self.image_shape[1]} pixels)"
                    if self.kind == "image"
                    else ""
                )
                + f", got shape {row.shape}"
            )
        row = row.reshape(expected)
        if not np.all(np.isfinite(row)):
            raise MaaslabError("the input contains NaN or infinity")
        return row

    def n_features(self, x: Any = None) -> int:
        """Number of features: columns, pixels, or the words of text `x`."""
        if self.kind == "text":
            return len(words_of(x)[0])
        if self.kind == "image":
            return int(np.prod(self.image_shape))
        return len(self.feature_names)

    def features(self, x: Any) -> tuple[str, ...]:
        """Feature names for input `x`."""
        if self.kind == "text":
            return words_of(x)[0]
        if self.kind == "image":
            h, w = self.image_shape
            return tuple(f"r{r}c{c}" for r in range(h) for c in range(w))
        return self.feature_names

    def absent(self) -> np.ndarray:
        """The value each feature takes when it is removed: background mean, or 0 (black)."""
        if self.kind == "image":
            return np.zeros(self.n_features())
        if self.background is None:
            raise MaaslabError(f"{self.name} has no background rows")
        return self.background.mean(0)

    def masked(self, x: Any, keep: np.ndarray) -> Any:
        """Inputs with the features where `keep` is False removed; keep is (F,) or (K, F)."""
        keep = np.atleast_2d(np.asarray(keep, dtype=bool))
        if self.kind == "text":
            _, spans = words_of(x)
            return [drop_words(x, spans, k) for k in keep]
        return np.where(keep, x[None, :], self.absent()[None, :])

    def randomized(self, seed: int = 0) -> Explainable:
        """The same model with every weight re-drawn at random (the sanity check's control)."""
        if self.module is None or self.rebuild is None:
            raise MaaslabError(
                f"{self.name} cannot be randomized: the sanity check needs a torch model"
            )
        torch.manual_seed(seed)
        module = copy.deepcopy(self.module)
        for sub in module.modules():
            if hasattr(sub, "reset_parameters") and sub is not module:
                sub.reset_parameters()
        return replace(
            self,
            module=module,
            predict_fn=self.rebuild(module),
            evaluations=0,
            name=f"{self.name} (random weights)",
            _lock=threading.Lock(),
        )


class _Counted(nn.Module):
    def __init__(self, inner: nn.Module, owner: Explainable) -> None:
        super().__init__()
        self.inner, self.owner = inner, owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.owner.count(len(x))
        return self.inner(x)


class _Probabilities(nn.Module):
    # The explained output is a probability, as predict_fn returns, for every method alike.
    # nn.Softmax as a module (not torch.softmax): DeepSHAP has a rule for the module only.
    def __init__(self, model: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.model, self.scale, self.softmax = model, scale, nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.model(x * self.scale) if self.scale != 1.0 else self.model(x))


def _torch_predict(module: nn.Module) -> Callable[[Any], np.ndarray]:
    module.eval()

    @torch.no_grad()
    def predict(batch: Any) -> np.ndarray:
        x = torch.as_tensor(np.asarray(batch, dtype=np.float32))
        device = next(module.parameters()).device
        return module(x.to(device)).double().cpu().numpy()

    return predict


def tabular(
    model: Any,
    background: np.ndarray,
    feature_names: Sequence[str],
    class_names: Sequence[str],
    name: str = "model",
) -> Explainable:
    """A classifier on table rows: a torch module (logits) or a scikit-learn estimator."""
    background = np.asarray(background, dtype=np.float64)
    if isinstance(model, nn.Module):
        module = _Probabilities(model)
        return Explainable(
            "tabular",
            _torch_predict(module),
            tuple(class_names),
            name,
            tuple(feature_names),
            background,
            module,
            rebuild=_torch_predict,
        )
    if not hasattr(model, "predict_proba"):
        raise MaaslabError(f"{type(model).__name__} has no predict_proba: it cannot be explained")
    return Explainable(
        "tabular", model.predict_proba, tuple(class_names), name, tuple(feature_names), background
    )


def image(
    model: nn.Module,
    background: np.ndarray,
    class_names: Sequence[str],
    name: str = "model",
    shape: tuple[int, int] = (8, 8),
    scale: float = 1.0,
) -> Explainable:
    """A torch classifier on flat grey images (N, H*W); `scale` maps the inputs to its own."""
    module = _Probabilities(model, scale)
    return Explainable(
        "image",
        _torch_predict(module),
        tuple(class_names),
        name,
        (),
        np.asarray(background, dtype=np.float64),
        module,
        shape,
        rebuild=_torch_predict,
    )


def text(
    predict_fn: Callable[[list[str]], np.ndarray],
    class_names: Sequence[str],
    name: str = "model",
    module: nn.Module | None = None,
    rebuild: Callable[[nn.Module], Callable[[Any], np.ndarray]] | None = None,
    tokenizer: Any = None,
) -> Explainable:
    """A text classifier: a list of strings -> (N, C) probabilities."""
    return Explainable(
        "text",
        predict_fn,
        tuple(class_names),
        name,
        module=module,
        rebuild=rebuild,
        tokenizer=tokenizer,
    )
