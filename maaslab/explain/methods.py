"""SHAP and LIME through their own libraries, one function per method, seeded.

Every method answers the same question for one input and one class: how much did each feature
move the predicted probability? They differ in what "a feature is absent" means and how the
answer is estimated (Shapley values by sampling coalitions or following gradients; LIME by
fitting a weighted linear model to random perturbations), and so in cost and in the answer.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from maaslab.errors import MaaslabError
from maaslab.explain.core import KINDS, WORD, Attribution, Explainable, words_of


@dataclass(frozen=True)
class Method:
    """One explanation method: what it applies to, its default budget, and how it runs."""

    key: str
    label: str  # shown in the app and in figures
    library: str  # "shap" or "lime"
    kinds: tuple[str, ...]  # input kinds it applies to
    needs_torch: bool  # gradient methods need the torch module
    budget: dict[str, int]  # kind -> default number of samples (model rows or coalitions)
    run: Callable[[Explainable, Any, int, int, int], tuple[np.ndarray, float]]


@functools.cache
def _numba_seeder() -> Callable[[int], None]:
    from numba import njit

    @njit
    def seed_numba(seed: int) -> None:
        np.random.seed(seed)  # inside a jitted function this seeds numba's own generator

    return seed_numba


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    # shap draws from NumPy's global generator, and for text (a partition tree) shuffles inside
    # numba-compiled code, whose generator is separate and which shap's `seed` does not reach.
    # Seed both for the call; put NumPy's state back afterwards.
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    _numba_seeder()(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


def _quiet() -> contextlib.AbstractContextManager:
    # shap logs a line per KernelExplainer call at INFO; nothing for a learner to act on.
    return _LogLevel("shap", logging.WARNING)


class _LogLevel(contextlib.ContextDecorator):
    def __init__(self, name: str, level: int) -> None:
        self.logger, self.level = logging.getLogger(name), level

    def __enter__(self) -> None:
        self.before = self.logger.level
        self.logger.setLevel(self.level)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.before)


def _silent(iterable, *args, **kwargs):
    return iterable


class _WordTokenizer:
    # For shap's Text masker: one token per word, running from the word to the next one, so
    # every character (punctuation included) belongs to a token and the unmasked text is the
    # original. shap's own regex tokenizer drops a text's final punctuation, and the model then
    # explains a slightly different text (additivity off by up to 0.1 on some reviews).
    def __call__(self, s: str, **_: object) -> dict[str, list]:
        if not s:
            return {"input_ids": [], "offset_mapping": []}
        starts = [m.start() for m in WORD.finditer(s)] or [0]
        bounds = [0, *starts[1:], len(s)]
        offsets = list(itertools.pairwise(bounds))
        return {"input_ids": list(range(1, len(offsets) + 1)), "offset_mapping": offsets}


def _text_masker():
    import shap

    return shap.maskers.Text(_WordTokenizer(), mask_token=" ", collapse_mask_token=True)


def _target_fn(model: Explainable, target: int) -> Callable[[Any], np.ndarray]:
    return lambda batch: model.predict(batch)[:, target]


def _text_tokens_to_words(x: str, tokens: list[str], values: np.ndarray) -> np.ndarray:
    # shap's regex masker makes one token per word plus the separator after it, so the tokens
    # holding a word line up with words_of(x); a leading separator token gets no word.
    keep = [i for i, t in enumerate(tokens) if words_of(t)[0]]
    words = words_of(x)[0]
    if len(keep) != len(words):
        raise MaaslabError("could not line up SHAP's tokens with the words of the text")
    return np.asarray(values, dtype=np.float64)[keep]


def _one_word(model: Explainable, x: str, target: int) -> tuple[np.ndarray, float]:
    # With one player the Shapley value is exact: f(text) - f(all masked). shap's text
    # explainers fail on a one-word text (an empty array reduction), so it is computed here.
    masked = _text_masker()(np.zeros(1, dtype=bool), x)[0][0]
    base, full = _target_fn(model, target)([masked, x])
    return np.array([full - base], dtype=np.float64), float(base)


def kernel_shap(model: Explainable, x: Any, target: int, seed: int, budget: int):
    """KernelSHAP: Shapley values from a weighted regression over sampled coalitions."""
    import shap

    with _numpy_seed(seed), _quiet():
        explainer = shap.KernelExplainer(_target_fn(model, target), model.background)
        values = explainer.shap_values(x[None, :], nsamples=budget, silent=True)
    return np.asarray(values, dtype=np.float64).reshape(-1), float(explainer.expected_value)


def permutation_shap(model: Explainable, x: Any, target: int, seed: int, budget: int):
    """Permutation SHAP: Shapley values from feature orderings walked forward and back."""
    import shap

    if model.kind == "text":
        if model.n_features(x) == 1:
            return _one_word(model, x, target)
        masker = _text_masker()
        explainer = shap.PermutationExplainer(_target_fn(model, target), masker, seed=seed)
        with _numpy_seed(seed):  # shap seeds NumPy's global generator only when it is built
            out = explainer([x], max_evals=max(budget, 2 * model.n_features(x) + 1), silent=True)
        values = _text_tokens_to_words(x, list(out.data[0]), out.values[0])
        return values, float(np.asarray(out.base_values).reshape(-1)[0])
    masker = shap.maskers.Independent(model.background, max_samples=len(model.background))
    explainer = shap.PermutationExplainer(_target_fn(model, target), masker, seed=seed)
    with _numpy_seed(seed):
        out = explainer(x[None, :], max_evals=max(budget, 2 * x.size + 1), silent=True)
    return out.values[0].astype(np.float64), float(np.asarray(out.base_values).reshape(-1)[0])


def partition_shap(model: Explainable, x: Any, target: int, seed: int, budget: int):
    """Partition SHAP: Owen values over a hierarchy of word groups (shap's text default)."""
    import shap

    if model.n_features(x) == 1:
        return _one_word(model, x, target)
    masker = _text_masker()
    explainer = shap.PartitionExplainer(_target_fn(model, target), masker, seed=seed)
    with _numpy_seed(seed):
        out = explainer([x], max_evals=budget, silent=True)
    values = _text_tokens_to_words(x, list(out.data[0]), out.values[0])
    return values, float(np.asarray(out.base_values).reshape(-1)[0])


class _OneClass(torch.nn.Module):
    # Only the explained class's probability: shap's torch explainers run one backward pass per
    # output, so selecting the class first makes them ten times cheaper on a digit.
    def __init__(self, net: torch.nn.Module, target: int) -> None:
        super().__init__()
        self.net, self.target = net, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, self.target : self.target + 1]


def _torch_inputs(
    model: Explainable, x: np.ndarray, target: int
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    net = _OneClass(model.counted_module(), target).eval()
    device = next(model.module.parameters()).device
    as_tensor = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)  # noqa: E731
    return net, as_tensor(x[None, :]), as_tensor(model.background)


def deep_shap(model: Explainable, x: Any, target: int, seed: int, budget: int):
    """DeepSHAP (DeepLIFT rules averaged over the background): one backward pass per row."""
    import shap

    net, xt, bg = _torch_inputs(model, x, target)
    explainer = shap.DeepExplainer(net, bg)
    with warnings.catch_warnings():
        # shap has no rule for nn.Upsample and passes gradients through it, which is exact for
        # nearest-neighbour upsampling (a linear copy); the warning says nothing to act on.
        warnings.filterwarnings("ignore", "unrecognized nn.Module: Upsample", UserWarning)
        values = explainer.shap_values(xt, check_additivity=False)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return values, float(np.asarray(explainer.expected_value).reshape(-1)[0])


def gradient_shap(model: Explainable, x: Any, target: int, seed: int, budget: int):
    """GradientSHAP (expected gradients): gradients at random points between x and background."""
    import shap

    net, xt, bg = _torch_inputs(model, x, target)
    explainer = shap.GradientExplainer(net, bg, batch_size=50)
    values = explainer.shap_values(xt, nsamples=budget, rseed=seed)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    with torch.no_grad():
        base = float(model.module(bg).double().mean(0)[target])
    return values, base


def lime(model: Explainable, x: Any, target: int, seed: int, budget: int):
    """LIME: a linear model fitted to the predictions on random perturbations near x."""
    n = model.n_features(x)
    if model.kind == "text":
        from lime.lime_text import LimeTextExplainer

        explainer = LimeTextExplainer(
            class_names=list(model.class_names),
            bow=False,
            split_expression=r"\W+",
            mask_string="",
            random_state=seed,
        )
        fn = lambda texts: model.predict(list(texts))  # noqa: E731
        exp = explainer.explain_instance(
            x, fn, labels=(target,), num_features=n, num_samples=budget
        )
    elif model.kind == "image":
        from lime import lime_image
        from lime.lime_image import LimeImageExplainer

        h, w = model.image_shape
        # Every pixel of an 8x8 digit is its own segment: the usual superpixels (quickshift,
        # SLIC) need images tens of pixels wide and would lump a digit into one or two blobs.
        segments = np.arange(h * w).reshape(h, w)
        explainer = LimeImageExplainer(random_state=seed)
        lime_image.tqdm = _silent  # lime 0.2.0.1 always draws a progress bar here
        rgb = np.repeat(x.reshape(h, w)[:, :, None], 3, axis=2)
        fn = lambda images: model.predict(np.asarray(images)[..., 0].reshape(len(images), -1))  # noqa: E731
        exp = explainer.explain_instance(
            rgb,
            fn,
            labels=(target,),
            top_labels=None,
            hide_color=0,
            num_features=n,
            num_samples=budget,
            batch_size=budget,
            segmentation_fn=lambda _: segments,
        )
    else:
        from lime.lime_tabular import LimeTabularExplainer

        explainer = LimeTabularExplainer(
            model.background,
            mode="classification",
            feature_names=list(model.feature_names),
            class_names=list(model.class_names),
            discretize_continuous=False,
            random_state=seed,
        )
        exp = explainer.explain_instance(
            x, model.predict, labels=(target,), num_features=n, num_samples=budget
        )
    values = np.zeros(n)
    for index, weight in exp.local_exp[target]:
        values[index] = weight
    if model.kind == "tabular":
        # LIME fits coefficients on standardized columns; a feature's share of this prediction
        # is its coefficient times the row's standardized value (0 = the background mean).
        values = values * np.asarray(exp.domain_mapper.scaled_row, dtype=np.float64)
    return values, float(exp.intercept[target])


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method(
            "kernel_shap",
            "KernelSHAP",
            "shap",
            ("tabular", "image"),
            False,
            {"tabular": 512, "image": 1024},
            kernel_shap,
        ),
        Method(
            "permutation_shap",
            "Permutation SHAP",
            "shap",
            KINDS,
            False,
            {"tabular": 512, "image": 1024, "text": 64},
            permutation_shap,
        ),
        Method(
            "partition_shap",
            "Partition SHAP",
            "shap",
            ("text",),
            False,
            {"text": 64},
            partition_shap,
        ),
        Method(
            "deep_shap",
            "DeepSHAP",
            "shap",
            ("tabular", "image"),
            True,
            {"tabular": 1, "image": 1},
            deep_shap,
        ),
        Method(
            "gradient_shap",
            "GradientSHAP",
            "shap",
            ("tabular", "image"),
            True,
            {"tabular": 200, "image": 200},
            gradient_shap,
        ),
        Method(
            "lime",
            "LIME",
            "lime",
            KINDS,
            False,
            {"tabular": 1000, "image": 1000, "text": 128},
            lime,
        ),
    )
}


def methods_for(model: Explainable) -> list[str]:
    """The methods that apply to `model` (by input kind, and torch-only ones for torch models)."""
    torch_ok = model.module is not None
    return [
        k for k, m in METHODS.items() if model.kind in m.kinds and (torch_ok or not m.needs_torch)
    ]


def explain(
    model: Explainable,
    x: Any,
    method: str = "kernel_shap",
    *,
    target: int | None = None,
    seed: int = 0,
    budget: int | None = None,
) -> Attribution:
    """Explain one input of `model` with `method`; the same seed gives the same Attribution.

    Parameters
    ----------
    model : an Explainable (maaslab.explain.explainable builds one from a model or its name).
    x : one input: a table row, 64 pixels in 0..1, or a text.
    method : a key of METHODS; `methods_for(model)` lists those that apply.
    target : the class to explain; None = the predicted class.
    seed : seeds the method's sampling.
    budget : samples the method may draw (model rows for LIME and KernelSHAP, max_evals for
        permutation/partition SHAP, samples per row for GradientSHAP); None = its default.
    """
    if method not in METHODS:
        raise MaaslabError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    spec = METHODS[method]
    if model.kind not in spec.kinds or (spec.needs_torch and model.module is None):
        raise MaaslabError(
            f"{spec.label} does not apply to {model.name} ({model.kind}"
            f"{', not a torch model' if spec.needs_torch and model.module is None else ''}); "
            f"choose one of {', '.join(methods_for(model))}"
        )
    x = model.check_input(x)
    if budget is not None and budget < 1:
        raise MaaslabError(f"budget must be at least 1, got {budget}")
    budget = budget or spec.budget[model.kind]
    proba = np.asarray(model.predict_fn([x] if model.kind == "text" else x[None, :]))[0]
    if target is None:
        target = int(np.argmax(proba))
    if not 0 <= target < len(model.class_names):
        raise MaaslabError(f"target must be a class index 0..{len(model.class_names) - 1}")
    model.evaluations, model.budget = 0, budget
    started = time.perf_counter()
    values, base = spec.run(model, x, target, seed, budget)
    seconds = time.perf_counter() - started
    return Attribution(
        values=np.asarray(values, dtype=np.float64),
        base_value=base,
        prediction=float(proba[target]),
        target=target,
        target_name=model.class_names[target],
        method=method,
        features=model.features(x),
        kind=model.kind,
        evaluations=model.evaluations,
        seconds=seconds,
        seed=seed,
        shape=model.image_shape if model.kind == "image" else (),
    )
