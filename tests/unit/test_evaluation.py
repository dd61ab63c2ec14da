import numpy as np
import pytest
import sklearn.metrics
import torch
from torch import nn

from maaslab import MaaslabError, seed_everything
from maaslab import evaluation as ev
from maaslab.data import load_dataset
from maaslab.exercises.cnn import check_confusion_matrix, check_conv_output_shape
from maaslab.exercises.pytorch import (
    check_gradient_by_hand,
    check_model_param_count,
    check_overfitting_gap,
)
from maaslab.models import build_model
from maaslab.train import EpochRecord, History, TrainConfig, evaluate_split, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _mlp(hidden=(32,), dropout=0.0):
    seed_everything(0)
    return build_model("mlp", in_features=64, hidden=hidden, out_features=10, dropout=dropout)


def test_predict_proba_is_the_softmax_of_the_logits_in_eval_mode(digits):
    model = _mlp(dropout=0.5).train()
    proba = ev.predict_proba(model, digits.X_test, batch_size=7)  # batches of 7: a ragged end
    assert model.training  # the caller's mode is restored
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(digits.X_test)), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(ev.predict(model, digits.X_test), expected.argmax(axis=1))
    with pytest.raises(MaaslabError, match="at least one row"):
        ev.predict_proba(model, digits.X_test[:0])


def test_cnn_predicts_from_flat_rows_and_gives_its_feature_maps(digits):
    seed_everything(0)
    cnn = build_model("cnn")
    assert ev.predict_proba(cnn, digits.X_test[:5]).shape == (5, 10)
    maps = ev.feature_maps(cnn, digits.X_test[0])
    assert {k: v.shape for k, v in maps.items()} == {"act1": (16, 16, 16), "act2": (32, 8, 8)}
    assert all(isinstance(v, np.ndarray) and v.min() >= 0 for v in maps.values())  # after ReLU
    with pytest.raises(MaaslabError, match="use a CNN"):
        ev.feature_maps(_mlp(), digits.X_test[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_predict_proba_runs_on_the_models_device(digits):
    model = _mlp()
    on_cpu = ev.predict_proba(model, digits.X_test)
    on_gpu = ev.predict_proba(model.to("cuda"), digits.X_test)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-6)


def test_confusion_matrix_and_per_class_accuracy_match_sklearn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    cm = ev.confusion_matrix(y_true, y_pred)
    np.testing.assert_array_equal(cm, sklearn.metrics.confusion_matrix(y_true, y_pred))
    np.testing.assert_allclose(
        ev.per_class_accuracy(cm), sklearn.metrics.recall_score(y_true, y_pred, average=None)
    )
    # A class that never occurs still gets its row and column when n_classes says so.
    cm = ev.confusion_matrix([0, 1, 1], [0, 1, 0], n_classes=3)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    acc = ev.per_class_accuracy(cm)
    assert acc[:2].tolist() == [1.0, 0.5] and np.isnan(acc[2])
    with pytest.raises(MaaslabError, match="3 true labels but 2 predictions"):
        ev.confusion_matrix([0, 1, 1], [0, 1])


def test_misclassified_lists_every_mistake_most_confident_first():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    y = np.array([0, 0, 1, 1, 1])
    mistakes = ev.misclassified(proba, y)
    assert [m.index for m in mistakes] == [1, 2, 4]
    assert mistakes[0] == ev.Mistake(index=1, true=0, predicted=1, confidence=0.8)
    assert [m.index for m in ev.misclassified(proba, y, limit=2)] == [1, 2]


def test_count_parameters_by_hand():
    assert ev.count_parameters(_mlp(hidden=(32,))) == 64 * 32 + 32 + 32 * 10 + 10
    frozen = _mlp(hidden=(32,))
    frozen.layers.hidden1.requires_grad_(False)
    assert ev.count_parameters(frozen) == 32 * 10 + 10


def test_compare_models_measures_the_final_weights(digits):
    model = _mlp()
    history = train(model, digits, TrainConfig(epochs=2, lr=0.01))
    reports = ev.compare_models({"mlp": (model, history)}, digits)  # on validation
    assert reports[0].split == "val"
    assert reports[0].accuracy == pytest.approx(history.last.val_accuracy)
    assert reports[0].loss == pytest.approx(history.last.val_loss, rel=1e-4)
    assert reports[0].parameters == ev.count_parameters(model) and reports[0].epochs == 2
    (test,) = ev.compare_models({"mlp": (model, history)}, digits, split="test")
    test_loss, test_accuracy = evaluate_split(model, digits, "test")
    assert test.accuracy == pytest.approx(test_accuracy) and test.loss == pytest.approx(test_loss)
    frame = ev.comparison_frame(reports)
    assert list(frame.index) == ["mlp"]
    assert list(frame.columns) == [
        "parameters",
        "epochs",
        "train_seconds",
        "split",
        "accuracy",
        "loss",
    ]
    with pytest.raises(MaaslabError, match="unknown split 'dev'"):
        ev.compare_models({"mlp": (model, history)}, digits, split="dev")


def test_small_subset_is_stratified_and_keeps_validation_and_test(digits):
    small = ev.small_subset(digits, 100)
    assert np.bincount(small.y_train).tolist() == [10] * 10
    assert small.X_test is digits.X_test and small.meta["n_train"] == 100
    assert small.X_val is digits.X_val
    with pytest.raises(MaaslabError, match="n_train must be between 10 and"):
        ev.small_subset(digits, 5)


def test_regularization_experiment_trains_one_mlp_per_regularizer(digits):
    cfg = ev.RegularizationConfig(n_train=50, hidden=(64,), epochs=40, lr=0.01, patience=2)
    runs = ev.regularization_experiment(digits, cfg)
    assert list(runs) == list(ev.REGULARIZERS)
    # Same initial weights and batches: the first loss is the same without dropout.
    first = {name: h.step_loss[0] for name, h in runs.items()}
    assert first["none"] == first["weight decay"] == first["early stopping"]
    assert first["dropout"] != first["none"]
    assert len(runs["none"].epochs) == 40
    assert runs["early stopping"].stopped_early and len(runs["early stopping"].epochs) < 40
    # The unregularized network memorises 50 examples; it does worse on the validation split.
    assert runs["none"].last.train_accuracy == 1.0 and ev.overfitting_gap(runs["none"]) > 0.05
    # With the penalty the weights cannot grow as freely, so the training loss stays higher.
    assert runs["weight decay"].last.train_loss > runs["none"].last.train_loss
    with pytest.raises(MaaslabError, match="unknown run"):
        ev.regularization_experiment(digits, cfg, runs=["batch norm"])


def _history(train_acc=1.0, val_acc=0.8):
    return History(epochs=[EpochRecord(1, 0.1, 0.5, train_acc, val_acc, {}, 0.0)])


def test_overfitting_gap():
    assert ev.overfitting_gap(_history()) == pytest.approx(0.2)
    with pytest.raises(MaaslabError, match="classification History"):
        ev.overfitting_gap(History())


# --- exercise checks: a right answer passes, a wrong one fails and says why ----------------------


def test_check_gradient():
    def fn(x):
        return (x**2).sum() + 3 * x[0] * x[1]

    at = np.array([1.0, -2.0])
    right = 2 * at + 3 * at[::-1]
    assert check_gradient_by_hand(right, fn, at)
    wrong = check_gradient_by_hand(2 * at, fn, at)
    assert not wrong and "largest difference" in wrong.message and "chain rule" in wrong.message


def test_check_param_count():
    model = _mlp(hidden=(32,))
    assert check_model_param_count(2410, model)
    no_bias = check_model_param_count(64 * 32 + 32 * 10, model)
    assert not no_bias and "not the 42 biases" in no_bias.message
    wrong = check_model_param_count(1000, model)
    assert not wrong and "has 2,410" in wrong.message and "n_in*n_out" in wrong.message
    assert "whole number" in check_model_param_count("many", model).message


def test_check_conv_output_shape():
    conv = nn.Conv2d(1, 16, 3, padding=1)
    assert check_conv_output_shape((1, 16, 8, 8), conv, (1, 1, 8, 8))
    assert check_conv_output_shape(
        (2, 16, 4, 4), nn.Sequential(conv, nn.MaxPool2d(2)), (2, 1, 8, 8)
    )
    no_padding = check_conv_output_shape((1, 16, 8, 8), nn.Conv2d(1, 16, 3), (1, 1, 8, 8))
    assert not no_padding and "(1, 16, 6, 6)" in no_padding.message
    assert "2*padding" in no_padding.message
    assert "dimensions" in check_conv_output_shape((16, 8, 8), conv, (1, 1, 8, 8)).message
    assert "tuple of ints" in check_conv_output_shape(None, conv, (1, 1, 8, 8)).message


def test_check_confusion_matrix():
    y_true, y_pred = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    right = sklearn.metrics.confusion_matrix(y_true, y_pred)
    assert check_confusion_matrix(right, y_true, y_pred)
    transposed = check_confusion_matrix(right.T, y_true, y_pred)
    assert not transposed and "transpose" in transposed.message
    off = right.copy()
    off[0, 0] += 1
    wrong = check_confusion_matrix(off, y_true, y_pred)
    assert not wrong and "index (0, 0)" in wrong.message


def test_check_overfitting_gap():
    history = _history(train_acc=0.95, val_acc=0.9)
    assert check_overfitting_gap(0.05, history)
    flipped = check_overfitting_gap(-0.05, history)
    assert not flipped and "wrong sign" in flipped.message
    assert not check_overfitting_gap(0.9, history)
