"""Recurrence figures: one line per model with its own numbers, shared colours, bad input named."""

import numpy as np
import pytest
import torch

from maaslab import plots

DISTANCES = [2, 8, 32]
ACCURACY = {"RNN": [1.0, 0.4, 0.1], "LSTM": [1.0, 0.9, 0.2], "attention": [1.0, 1.0, 1.0]}


def test_accuracy_by_distance_one_line_per_model_and_a_chance_line():
    fig = plots.accuracy_by_distance(DISTANCES, ACCURACY, chance=0.1)
    assert [t.name for t in fig.data] == list(ACCURACY)
    for trace, values in zip(fig.data, ACCURACY.values(), strict=True):
        assert list(trace.x) == DISTANCES
        np.testing.assert_allclose(np.array(trace.y, dtype=float), values)
    assert len({t.line.color for t in fig.data}) == 3
    assert [s.y0 for s in fig.layout.shapes] == [0.1]  # the chance line
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == DISTANCES
    assert not plots.accuracy_by_distance(DISTANCES, ACCURACY).layout.shapes


def test_accuracy_by_distance_names_a_model_with_the_wrong_number_of_values():
    with pytest.raises(ValueError, match="LSTM: expected 3 numbers"):
        plots.accuracy_by_distance(DISTANCES, {"LSTM": [1.0, 0.5]})


def test_gradient_by_position_log_scale_positions_from_zero():
    norms = {"RNN": torch.tensor([1e-6, 1e-3, 1.0]), "attention": np.array([0.2, 0.2, 1.0])}
    fig = plots.gradient_by_position(norms, title="grads")
    assert [t.name for t in fig.data] == ["RNN", "attention"]
    assert list(fig.data[0].x) == [0, 1, 2]
    np.testing.assert_allclose(np.array(fig.data[0].y, dtype=float), [1e-6, 1e-3, 1.0])
    assert fig.layout.yaxis.type == "log" and fig.layout.title.text == "grads"
    # The same model order gives the same colours as accuracy_by_distance.
    assert fig.data[0].line.color == plots.accuracy_by_distance([1], {"x": [1]}).data[0].line.color


def test_gradient_by_position_refuses_models_of_different_lengths():
    with pytest.raises(ValueError, match="same number of positions"):
        plots.gradient_by_position({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match="1-D"):
        plots.gradient_by_position({"a": np.ones((2, 2))})
