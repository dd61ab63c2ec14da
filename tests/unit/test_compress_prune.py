"""Magnitude pruning: the fraction zeroed, masks held through fine-tuning, layers that shrink."""

from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from maaslab.auto import load
from maaslab.compress.prune import apply_masks, prunable, prune, shrink, sparsity
from maaslab.data import load_dataset
from maaslab.errors import MaaslabError
from maaslab.explain.core import Cancelled
from maaslab.models.sentiment import review_dataset


@pytest.fixture(scope="module")
def cnn():
    return load("digits-cnn").model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def minilm():
    return load("sentiment-minilm").model


def _accuracy(model, data):
    with torch.no_grad():
        return (model(torch.as_tensor(data.X_test)).argmax(1).numpy() == data.y_test).mean()


def test_unstructured_zeroes_the_fraction_and_fine_tuning_keeps_the_zeros(cnn, digits, monkeypatch):
    monkeypatch.setenv("MAASLAB_FAST", "1")
    pruned_only = prune(cnn, kind="unstructured", amount=0.6, data=digits, finetune_epochs=0)
    tuned = prune(cnn, kind="unstructured", amount=0.6, data=digits, finetune_epochs=1)
    assert sparsity(pruned_only) == pytest.approx(0.6, abs=1e-3)
    assert sparsity(tuned) == pytest.approx(0.6, abs=1e-3)
    assert sparsity(cnn) == 0.0  # the input model is not changed
    for (_, a), (_, b) in zip(prunable(pruned_only), prunable(tuned), strict=True):
        zero = a.weight == 0
        assert torch.all(b.weight[zero] == 0)  # every pruned weight is still exactly 0
        assert not torch.equal(a.weight[~zero], b.weight[~zero])  # the others were trained
    assert _accuracy(tuned, digits) > 0.9


def test_global_pruning_takes_the_smallest_magnitudes_over_all_layers(cnn):
    pruned = prune(cnn, kind="unstructured", amount=0.3, finetune_epochs=0)
    before = torch.cat([m.weight.flatten().abs() for _, m in prunable(cnn)])
    after = torch.cat([m.weight.flatten() for _, m in prunable(pruned)])
    threshold = before.sort().values[round(0.3 * len(before)) - 1]
    assert torch.all(after[before < threshold] == 0)
    assert torch.all(after[before > threshold] != 0)


def test_structured_cnn_shrinks_channels_and_hidden_units(cnn, digits, monkeypatch):
    monkeypatch.setenv("MAASLAB_FAST", "1")
    small = prune(cnn, kind="structured", amount=0.25, data=digits, finetune_epochs=1)
    assert small.config.channels == (12, 24) and small.config.hidden == 48
    assert small.layers.conv2.weight.shape == (24, 12, 3, 3)
    assert small.layers.fc.weight.shape == (48, 24 * small.config.feature_size**2)
    out = small(torch.as_tensor(digits.X_test[:5]))
    assert out.shape == (5, 10) and torch.isfinite(out).all()
    assert _accuracy(small, digits) > 0.9


def test_shrinking_a_cnn_keeps_its_outputs(cnn, digits):
    masked = copy.deepcopy(cnn)
    for module, name in apply_masks(masked, "structured", 0.5):
        torch_prune.remove(module, name)
    x = torch.as_tensor(digits.X_test[:20])
    with torch.no_grad():
        before = masked(x)
        small = shrink(masked)
        torch.testing.assert_close(small(x), before, atol=1e-5, rtol=1e-5)
    assert small.config.channels == (8, 16)


def test_shrinking_minilm_removes_ffn_neurons_with_the_same_outputs(minilm):
    model = copy.deepcopy(minilm)
    for module, name in apply_masks(model, "structured", 0.5):
        torch_prune.remove(module, name)
    ids = torch.as_tensor(model.encode(["Not bad at all.", "A dull, joyless two hours."])[0])
    with torch.no_grad():
        before = model(ids)
        shrink(model)
        after = model(ids)
    block = model.encoder.encoder.layer[0]
    assert block.intermediate.dense.weight.shape == (768, 384)
    assert block.output.dense.weight.shape == (384, 768)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_structured_minilm_fine_tunes_and_keeps_working(minilm, monkeypatch):
    monkeypatch.setenv("MAASLAB_FAST", "1")
    stages = []
    full = review_dataset(minilm)
    # Two steps of fine-tuning are enough to show the loop runs on the shrinking model.
    data = dataclasses.replace(
        full,
        X_train=full.X_train[:32],
        y_train=full.y_train[:32],
        X_test=full.X_test[:16],
        y_test=full.y_test[:16],
    )
    small = prune(
        minilm,
        kind="structured",
        amount=0.25,
        data=data,
        finetune_epochs=1,
        progress=lambda s, f: stages.append((s, f)),
    )
    assert all(b.intermediate.dense.out_features == 1152 for b in small.encoder.encoder.layer)
    ids = torch.as_tensor(small.encode(["What a lovely film."])[0])
    with torch.no_grad():
        assert torch.isfinite(small(ids)).all()
    names = [s for s, _ in stages]
    assert names[0] == "pruning" and "fine-tuning" in names and stages[-1] == ("done", 1.0)
    assert all(0.0 <= f <= 1.0 for _, f in stages)


def test_cancel_raises_cancelled(cnn, digits):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="cancelled"):
        prune(cnn, kind="unstructured", amount=0.5, data=digits, finetune_epochs=1, cancel=cancel)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "random", "amount": 0.5}, "unknown pruning kind 'random'"),
        ({"kind": "unstructured", "amount": 0.0}, r"must lie in \(0, 1\)"),
        ({"kind": "unstructured", "amount": 1.0}, r"must lie in \(0, 1\)"),
        ({"kind": "structured", "amount": -0.2}, r"must lie in \(0, 1\)"),
        ({"kind": "unstructured", "amount": 0.5, "finetune_epochs": 1}, "needs the training data"),
        ({"kind": "unstructured", "amount": 0.5, "finetune_epochs": -1}, "0 or more"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(cnn, kwargs, message):
    with pytest.raises(MaaslabError, match=message):
        prune(cnn, **{"finetune_epochs": 0, **kwargs})


def test_structured_pruning_refuses_a_model_it_cannot_shrink():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(MaaslabError, match="kind='unstructured'"):
        prune(model, kind="structured", amount=0.5, finetune_epochs=0)
    pruned = prune(model, kind="unstructured", amount=0.5, finetune_epochs=0)
    assert sparsity(pruned) == pytest.approx(0.5, abs=0.05)
    assert np.isfinite(pruned(torch.ones(1, 4)).detach().numpy()).all()
