"""Figures of lessons 01-02 draw the numbers of the results they are given."""

import numpy as np
import pytest

from maaslab import plots
from maaslab.optimization.descent import gradient_descent
from maaslab.optimization.linreg import closed_form, diabetes, loss_surface, mse_loss
from maaslab.optimization.minibatch import Schedule, SGDConfig, learning_rate, minibatch_gd


@pytest.fixture(scope="module")
def bmi():
    return diabetes("bmi")


@pytest.fixture(scope="module")
def runs(bmi):
    X, y = bmi.X_train, bmi.y_train
    return [gradient_descent(X, y, lr=lr, steps=12) for lr in (0.05, 0.5, 1.5)]


def test_loss_contour_draws_paths_start_and_minimum(bmi, runs):
    surface = loss_surface(
        bmi.X_train,
        bmi.y_train,
        include=[np.zeros(2)],
        resolution=15,
        feature_names=bmi.feature_names,
    )
    fig = plots.loss_contour(surface, runs[:2], equal_axes=True)
    contour, path, start, _, _, star = fig.data
    np.testing.assert_allclose(contour.z, np.log10(surface.loss))
    np.testing.assert_allclose(path.x, runs[0].thetas[:, 0])
    np.testing.assert_allclose(path.y, runs[0].thetas[:, 1])
    assert (start.x[0], start.y[0]) == (0.0, 0.0)
    np.testing.assert_allclose([star.x[0], star.y[0]], surface.optimum)
    assert fig.layout.xaxis.title.text == "w[bmi]" and fig.layout.yaxis.scaleanchor == "x"
    assert tuple(fig.layout.yaxis.range) == (surface.b[0], surface.b[-1])


def test_loss_vs_step_is_log_and_marks_divergence(bmi, runs):
    best = mse_loss(closed_form(bmi.X_train, bmi.y_train), bmi.X_train, bmi.y_train)
    fig = plots.loss_vs_step(runs, optimum_loss=best)
    assert fig.layout.yaxis.type == "log"
    assert [t.name for t in fig.data] == ["lr 0.05", "lr 0.5", "lr 1.5 (diverged)"]
    np.testing.assert_allclose(fig.data[1].y, runs[1].losses)
    assert fig.layout.shapes[0].y0 == best  # the J* floor


def test_loss_vs_step_can_show_the_distance_to_the_minimum(bmi, runs):
    best = mse_loss(closed_form(bmi.X_train, bmi.y_train), bmi.X_train, bmi.y_train)
    fig = plots.loss_vs_step(runs[:2], optimum_loss=best, excess=True)
    np.testing.assert_allclose(fig.data[0].y, runs[0].losses - best)
    assert min(fig.data[1].y) > 0 and fig.layout.yaxis.title.text == "J - J*"
    with pytest.raises(ValueError, match="needs optimum_loss"):
        plots.loss_vs_step(runs, excess=True)


def test_batch_size_comparison_uses_epochs_and_updates(bmi):
    X, y = bmi.X_train, bmi.y_train
    results = [minibatch_gd(X, y, SGDConfig(lr=0.05, batch_size=b, epochs=2)) for b in (1, 50)]
    fig = plots.batch_size_comparison(results)
    per_epoch, per_update = fig.data[0], fig.data[1]
    assert per_epoch.x[-1] == 2.0 and len(per_epoch.x) == results[0].steps + 1
    assert per_update.x[0] == 1 and per_update.x[-1] == results[0].steps
    assert fig.layout.xaxis2.type == "log" and fig.layout.yaxis.type == "log"
    assert [t.name for t in fig.data if t.showlegend is not False] == ["batch 1", "batch 50"]


def test_fitted_lines_follow_theta(bmi):
    theta = closed_form(bmi.X_train, bmi.y_train)
    fig = plots.fitted_lines(bmi, {"least squares": theta})
    line = fig.data[-1]
    np.testing.assert_allclose(line.y, theta[0] * np.asarray(line.x) + theta[1])
    assert sum(len(t.x) for t in fig.data[:2]) == len(bmi.y_train) + len(bmi.y_test)
    with pytest.raises(ValueError, match="one feature"):
        plots.fitted_lines(diabetes(), {"x": np.zeros(11)})


def test_schedule_plot_draws_learning_rate():
    schedules = [Schedule(), Schedule("step"), Schedule("cosine")]
    fig = plots.schedule_plot(schedules, lr=0.1, epochs=10)
    assert [t.name for t in fig.data] == [s.label for s in schedules]
    cosine = fig.data[2]
    k = 37
    assert cosine.y[k] == learning_rate(schedules[2], 0.1, cosine.x[k], 10)
    assert fig.data[1].line.shape == "hv"
