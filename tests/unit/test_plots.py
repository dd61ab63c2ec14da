import math

import pytest

from maaslab import plots
from maaslab.data import load_dataset
from maaslab.train import EpochRecord, History


def _history(task="classification"):
    acc = 0.9 if task == "classification" else None
    epochs = [
        EpochRecord(e, 1.0 / e, 1.2 / e, acc, acc, {"hidden1": 0.5, "output": 0.1}, 0.01)
        for e in (1, 2, 3)
    ]
    return History(
        task=task, step_loss=[1.0, math.nan, 0.5, 0.4, 0.3, 0.2], epochs=epochs, steps_per_epoch=2
    )


def test_loss_curve_places_steps_on_the_epoch_axis():
    fig = plots.loss_curve(_history())
    steps, train, val = fig.data
    assert list(steps.x) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert steps.y[1] is None  # NaN drawn as a gap
    assert list(train.y) == [1.0, 0.5, 1 / 3] and val.name == "validation"


def test_accuracy_and_combined_curves():
    assert len(plots.accuracy_curve(_history()).data) == 2
    assert len(plots.accuracy_curve(_history("regression")).data) == 0
    assert len(plots.training_curves(_history()).data) == 5


def test_grad_norm_curve_one_line_per_layer():
    fig = plots.grad_norm_curve(_history())
    assert [t.name for t in fig.data] == ["hidden1", "output"]
    assert fig.layout.yaxis.type == "log"


def test_dataset_scatter_needs_two_features():
    data = load_dataset("moons", n_samples=100)
    fig = plots.dataset_scatter(data)
    # train and validation points; the test points are kept for the end
    assert sum(len(t.x) for t in fig.data) == len(data.y_train) + len(data.y_val) == 75
    assert {t.name.split(" ·")[0] for t in fig.data} == {"train", "validation"}
    with pytest.raises(ValueError, match="needs 2-D data"):
        plots.dataset_scatter(load_dataset("digits"))
