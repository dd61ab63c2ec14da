"""Race figures: traces named per optimizer, frames bounded and consistent with the paths."""

import numpy as np
import plotly.graph_objects as go
import pytest

from maaslab import plots
from maaslab.optimization.optim import SURFACES, OptimizerConfig, RaceConfig, race


@pytest.fixture(scope="module")
def result():
    return race(RaceConfig("quadratic", steps=200))


def _by_name(fig: go.Figure) -> dict:
    return {t.name: t for t in fig.data if t.showlegend is not False}


@pytest.mark.parametrize("name", list(SURFACES))
def test_surface_contour(name):
    surface = SURFACES[name]
    fig = plots.surface_contour(surface)
    contour = fig.data[0]
    assert isinstance(contour, go.Contour)
    assert tuple(fig.layout.xaxis.range) == surface.x_range
    z = np.asarray(contour.z, dtype=float)
    if surface.minimum is None:
        assert "minimum" not in {t.name for t in fig.data}
        assert z.min() < 0 < z.max()  # coloured by f itself
    else:
        star = next(t for t in fig.data if t.name == "minimum")
        assert star.marker.symbol == "star" and (star.x[0], star.y[0]) == surface.minimum
        assert z.max() - z.min() > 3  # log10 scale: several decades between floor and walls


def test_race_contour_traces_and_frames(result):
    fig = plots.race_contour(result, max_frames=25)
    names = _by_name(fig)
    for path in result.paths:
        assert path.label in names
        line = names[path.label]
        np.testing.assert_allclose(line.x[-1], path.xy[-1, 0], rtol=1e-6)  # full path shown
    assert "start" in names and "minimum" in names
    assert 2 <= len(fig.frames) <= 25
    assert int(fig.frames[0].name) == 0
    assert int(fig.frames[-1].name) == result.config.steps
    slider = fig.layout.sliders[0]
    assert len(slider.steps) == len(fig.frames) and slider.active == len(fig.frames) - 1
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert any("Play" in label for label in labels) and any("Pause" in label for label in labels)
    # Each frame moves only the paths and current points, and a frame at step s ends at step s.
    frame = fig.frames[len(fig.frames) // 2]
    assert len(frame.data) == len(frame.traces) == 2 * len(result.paths)
    step = int(frame.name)
    gd_dot = frame.data[len(result.paths)]
    np.testing.assert_allclose(
        [gd_dot.x[0], gd_dot.y[0]], result.paths[0].xy[step], rtol=1e-5, atol=1e-6
    )


def test_race_contour_stays_light_on_long_races():
    result = race(RaceConfig("rosenbrock", steps=3000))
    fig = plots.race_contour(result, max_frames=60, max_points=300)
    assert len(fig.frames) <= 60
    assert all(len(t.x) <= 301 for f in fig.frames for t in f.data)
    assert len(fig.to_json()) < 2_000_000


def test_race_contour_still(result):
    fig = plots.race_contour(result, animate=False)
    assert not fig.frames and not fig.layout.sliders


def test_diverged_paths_are_named_and_cut():
    cfg = RaceConfig("quadratic", (OptimizerConfig("gd", lr=0.05), "adam"), steps=50)
    res = race(cfg)
    fig = plots.race_contour(res)
    names = list(_by_name(fig))
    assert "GD (lr 0.05) · diverged at step 10" in names
    last = fig.frames[-1].data[0]
    assert len(last.x) == 10  # the frames after divergence show the path up to its last point
    loss = plots.race_loss(res)
    assert loss.data[0].name.endswith("diverged at step 10") and len(loss.data[0].y) == 10
    # the exploding curve does not stretch the axis: Adam's curve keeps its room
    low, high = loss.layout.yaxis.range
    assert max(loss.data[0].y) > 10**high and high < 5
    assert low <= np.log10(min(loss.data[1].y))


def test_race_loss(result):
    fig = plots.race_loss(result)
    assert [t.name for t in fig.data] == [p.label for p in result.paths]
    assert fig.layout.yaxis.type == "log"
    assert all(np.min(t.y) > 0 for t in fig.data)
    saddle = plots.race_loss(race(RaceConfig("saddle", steps=100)))
    assert saddle.layout.yaxis.type != "log"
    assert saddle.layout.yaxis.range[0] < 0 < saddle.layout.yaxis.range[1]


def test_click_targets_are_invisible_markers_with_the_surface_value():
    surface = SURFACES["rosenbrock"]
    points = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    fig = plots.add_click_targets(go.Figure(), surface, points)
    marks = fig.data[-1]
    assert marks.mode == "markers" and marks.marker.opacity == 0 and not marks.showlegend
    np.testing.assert_allclose(marks.customdata, surface.value(points))
