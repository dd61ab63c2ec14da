"""Explainables for the project's models: shipped names, zoo wrappers, and the tabular pair.

Lesson 10 and the Explain page explain two classifiers of the breast-cancer table, trained in
seconds with fixed seeds: a torch MLP (through the shared loop) and a scikit-learn gradient
boosting model, so SHAP and LIME can be compared across a network and a tree ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from maaslab.data import Dataset, load_dataset
from maaslab.errors import MaaslabError
from maaslab.explain.core import Explainable, image, tabular, text
from maaslab.runtime import seed_everything

BACKGROUND_ROWS = 50  # rows standing for "typical input"; SHAP's cost grows with them


def background_rows(X: np.ndarray, rows: int = BACKGROUND_ROWS, seed: int = 0) -> np.ndarray:
    """A fixed random sample of training rows used as the background distribution."""
    rng = np.random.default_rng(seed)
    return X[np.sort(rng.choice(len(X), size=min(rows, len(X)), replace=False))]


@dataclass(frozen=True)
class TabularModels:
    """The breast-cancer data and two classifiers of it, ready to explain."""

    data: Dataset  # standardized features (z-scores from the training split)
    mlp: Explainable  # torch MLP 30-32-2 trained with maaslab.train
    boosting: Explainable  # scikit-learn HistGradientBoostingClassifier
    mlp_accuracy: float  # test accuracy
    boosting_accuracy: float

    def test_row(self, model: Explainable, i: int) -> tuple[np.ndarray, str]:
        """Test row `i` and a markdown line on it: the true class, and what `model` says."""
        x = self.data.X_test[i]
        p = model.predict_fn(x[None, :])[0]
        names = self.data.class_names
        truth = names[self.data.y_test[i]]
        said = f"{names[p.argmax()]} ({p.max():.0%})"
        return x, f"Row {i}: truly **{truth}**; the model says {said}"


def breast_cancer_models(seed: int = 0) -> TabularModels:
    """Train the torch MLP and the gradient-boosting model on breast cancer (a few seconds)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from maaslab.evaluation import predict_proba
    from maaslab.models import build_model
    from maaslab.train import TrainConfig, train

    # fixed recipes that choose nothing on held-out data: every non-test row trains
    data = load_dataset("breast_cancer", standardize=True, seed=seed, val_fraction=0.0)
    seed_everything(seed)
    net = build_model("mlp", in_features=data.n_features, hidden=(32,), out_features=2)
    train(net, data, TrainConfig(epochs=30, batch_size=32, lr=0.003, seed=seed, device="cpu"))
    boost = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
    boost.fit(data.X_train, data.y_train)
    bg = background_rows(data.X_train, seed=seed)
    names, classes = data.feature_names, data.class_names
    mlp_acc = float((predict_proba(net, data.X_test).argmax(1) == data.y_test).mean())
    boost_acc = float((boost.predict(data.X_test) == data.y_test).mean())
    return TabularModels(
        data,
        tabular(net, bg, names, classes, name="breast-cancer MLP"),
        tabular(boost, bg, names, classes, name="breast-cancer gradient boosting"),
        mlp_acc,
        boost_acc,
    )


def _text_predict(model, tokenizer, max_length: int, pad_id: int):
    from maaslab.models.encoder import tokenize

    @torch.no_grad()
    def predict(texts: list[str]) -> np.ndarray:
        # A perturbation may remove every word; the model still needs a string to read.
        texts = [t if t.strip() else "." for t in texts]
        out = []
        for i in range(0, len(texts), 64):
            batch, _ = tokenize(tokenizer, texts[i : i + 64], max_length)
            out.append(torch.softmax(model(batch["input_ids"]).float(), -1).double().numpy())
        return np.concatenate(out)

    return predict


def _sentiment(wrapper: Any) -> Explainable:
    model = wrapper.model
    cfg = model.config

    def rebuild(module: nn.Module):
        return _text_predict(module, model.tokenizer, cfg.max_length, model.pad_id)

    return text(
        rebuild(model),
        cfg.labels,
        name=wrapper.name,
        module=model,
        rebuild=rebuild,
        tokenizer=model.tokenizer,
    )


def _digits(wrapper: Any, seed: int) -> Explainable:
    data = load_dataset("digits", seed=0, val_fraction=0.0)  # the digits models' training rows
    bg = background_rows(data.X_train, seed=seed)  # pixels 0..1, as the networks read them
    return image(wrapper.model, bg, wrapper.class_names, name=wrapper.name)


def explainable(obj: Any, *, seed: int = 0) -> Explainable:
    """An Explainable from a shipped model's name or its zoo wrapper (digits, sentiment).

    For tabular models use `breast_cancer_models()` or `maaslab.explain.tabular(...)`.
    """
    if isinstance(obj, Explainable):
        return obj
    if isinstance(obj, str):
        from maaslab.auto import load

        obj = load(obj)
    from maaslab.zoo import DigitsClassifier, SentimentModel

    if isinstance(obj, DigitsClassifier):
        return _digits(obj, seed)
    if isinstance(obj, SentimentModel):
        return _sentiment(obj)
    raise MaaslabError(
        f"{getattr(obj, 'name', type(obj).__name__)} cannot be explained: explanations cover "
        "classifiers (digits-mlp, digits-cnn, sentiment-minilm, or a table model via "
        "maaslab.explain.tabular)"
    )
