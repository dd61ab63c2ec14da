import numpy as np
import pytest
import torch

from maaslab import plots
from maaslab.evaluation import Mistake
from maaslab.plots._style import TEST_COLOR, TRAIN_COLOR
from maaslab.train import EpochRecord, History


def _tiles(fig):
    """The non-empty tiles of a tiled image figure, read back from the heatmap, in order."""
    z = np.array(fig.data[0].z, dtype=float)
    filled = ~np.isnan(z)
    rows = np.flatnonzero(filled.any(axis=1))
    cols = np.flatnonzero(filled.any(axis=0))
    # Runs of consecutive filled rows / columns are the tile bands.
    row_bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    col_bands = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    return [z[np.ix_(r, c)] for r in row_bands for c in col_bands if filled[np.ix_(r, c)].all()]


def test_digit_grid_places_every_image_under_its_title():
    images = np.random.default_rng(0).uniform(size=(10, 64))
    fig = plots.digit_grid(images, [f"label {k}" for k in range(10)], cols=4)
    assert len(fig.data) == 1 and fig.data[0].type == "heatmap"
    tiles = _tiles(fig)
    assert len(tiles) == 10
    for image, tile in zip(images, tiles, strict=True):
        np.testing.assert_array_equal(tile, image.reshape(8, 8))
    assert [a.text for a in fig.layout.annotations] == [f"label {k}" for k in range(10)]
    assert fig.layout.yaxis.autorange == "reversed"  # row 0 of an image on top
    with pytest.raises(ValueError, match="3 titles for 10 images"):
        plots.digit_grid(images, ["a", "b", "c"])
    with pytest.raises(ValueError, match="not square"):
        plots.digit_grid(np.zeros((2, 60)))


def test_confusion_matrix_heatmap_counts_and_row_shares():
    cm = np.array([[8, 2], [1, 9]])
    fig = plots.confusion_matrix_heatmap(cm, ["cat", "dog"])
    np.testing.assert_array_equal(fig.data[0].z, cm)
    assert list(fig.data[0].x) == ["cat", "dog"] and fig.layout.xaxis.title.text == "predicted"
    shares = plots.confusion_matrix_heatmap(cm, normalize=True).data[0].z
    np.testing.assert_allclose(np.sum(shares, axis=1), 1.0)
    assert shares[0][1] == pytest.approx(0.2)


def test_conv_filter_grid_scales_each_kernel_to_plus_minus_one():
    weight = torch.randn(6, 2, 3, 3)
    fig = plots.conv_filter_grid(weight, in_channel=1, cols=3)
    tiles = _tiles(fig)
    assert len(tiles) == 6 and len(fig.layout.annotations) == 6
    for kernel, tile in zip(weight[:, 1].numpy(), tiles, strict=True):
        np.testing.assert_allclose(tile, kernel / np.abs(kernel).max(), rtol=1e-6)
    assert fig.data[0].zmin == -1 and fig.data[0].zmax == 1
    with pytest.raises(ValueError, match="conv weight"):
        plots.conv_filter_grid(torch.zeros(6, 3, 3))


def test_feature_map_grid_scales_each_map_to_its_peak():
    maps = np.random.default_rng(0).uniform(0, 5, size=(12, 16, 16))
    maps[3] = 0.0  # a dead channel stays zero instead of dividing by zero
    fig = plots.feature_map_grid(maps, limit=8)
    tiles = _tiles(fig)
    assert len(tiles) == 8
    assert [t.max() for t in tiles] == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert fig.data[0].zmin == 0 and [a.text for a in fig.layout.annotations][:2] == [
        "channel 0",
        "channel 1",
    ]
    # Maps with negative values (before a ReLU) are centred on zero in a diverging scale.
    signed = plots.feature_map_grid(np.stack([maps[0], -maps[1]]), titles=["a", "b"])
    assert signed.data[0].zmin == -1 and _tiles(signed)[1].min() == -1.0
    assert [a.text for a in signed.layout.annotations] == ["a", "b"]


def test_misclassified_grid_titles_say_true_arrow_predicted():
    X = np.random.default_rng(0).uniform(size=(5, 64))
    mistakes = [Mistake(3, 5, 3, 0.91), Mistake(0, 8, 1, 0.5)]
    fig = plots.misclassified_grid(X, mistakes)
    assert [a.text for a in fig.layout.annotations] == ["5 → 3<br>(0.91)", "8 → 1<br>(0.50)"]
    np.testing.assert_array_equal(_tiles(fig)[0], X[3].reshape(8, 8))
    named = plots.misclassified_grid(X, mistakes, [str(k) * 2 for k in range(10)])
    assert named.layout.annotations[0].text.startswith("55 → 33")
    empty = plots.misclassified_grid(X, [])
    assert "no misclassified" in empty.layout.annotations[0].text and not empty.data


def test_probability_bars_highlight_the_true_class():
    fig = plots.probability_bars(np.array([0.1, 0.7, 0.2]), true_label=2)
    assert list(fig.data[0].y) == [0.1, 0.7, 0.2]
    assert list(fig.data[0].marker.color) == [TRAIN_COLOR, TRAIN_COLOR, TEST_COLOR]
    assert "true class 2" in fig.layout.title.text


def test_run_comparison_one_colour_per_run_solid_train_dashed_validation():
    def history(scale):
        records = [EpochRecord(e, scale / e, 2 * scale / e, 0.5, 0.4, {}, 0.0) for e in (1, 2)]
        return History(epochs=records)

    fig = plots.run_comparison({"none": history(1.0), "dropout": history(2.0)})
    assert len(fig.data) == 8  # 2 runs x (loss, accuracy) x (train, validation)
    by_name = {}
    for trace in fig.data:
        by_name.setdefault(trace.name, []).append(trace)
    val = "validation"
    assert set(by_name) == {"none · train", f"none · {val}", "dropout · train", f"dropout · {val}"}
    assert {t.line.dash for t in by_name["none · train"]} == {"solid"}
    assert {t.line.dash for t in by_name[f"none · {val}"]} == {"dash"}
    none_colors = {t.line.color for n in ("none · train", f"none · {val}") for t in by_name[n]}
    drop_colors = {
        t.line.color for n in ("dropout · train", f"dropout · {val}") for t in by_name[n]
    }
    assert len(none_colors) == 1 and len(drop_colors) == 1 and none_colors != drop_colors
    assert list(by_name[f"dropout · {val}"][0].y) == [4.0, 2.0]
    assert sum(t.showlegend for t in fig.data) == 4  # one legend entry per run and split


def test_digit_canvas_has_a_click_target_per_pixel():
    pixels = np.arange(64) % 17
    fig = plots.digit_canvas(pixels)
    heat, marks = fig.data
    np.testing.assert_array_equal(np.asarray(heat.z), pixels.reshape(8, 8))
    assert list(marks.customdata) == list(range(64)) and marks.marker.opacity == 0
    assert marks.x[9] == 1 and marks.y[9] == 1  # index 9 is row 1, column 1
