"""Training Studio backend: config checks, the run it builds, live views, URL round trips."""

import dataclasses

import numpy as np
import pytest
import torch

from maaslab import MaaslabError, plots
from maaslab.jobs import TrainingJob
from maaslab.registry import read_metadata
from maaslab.studio import (
    StudioConfig,
    boundary_grid,
    build_run,
    confusion_on_val,
    save_run,
    saved_note,
)
from maaslab.train import evaluate_split
from maaslab.urlstate import config_from_params, config_to_params


def test_build_run_makes_the_model_the_config_names():
    run = build_run(StudioConfig(dataset="circles", depth=3, width=8, dropout=0.1))
    assert run.model.model_type == "mlp" and run.model.config.hidden == (8, 8, 8)
    assert run.model.config.dropout == 0.1 and run.data.n_features == 2
    cnn = build_run(StudioConfig(dataset="digits", model="cnn", depth=2, width=4))
    assert cnn.model.config.channels == (4, 8) and cnn.model.config.out_features == 10
    assert cnn.train_config.lr == 0.01 and cnn.train_config.seed == 0


def test_same_config_same_initial_weights_and_data():
    a, b = build_run(StudioConfig(seed=3)), build_run(StudioConfig(seed=3))
    for (name, pa), pb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
    np.testing.assert_array_equal(a.data.X_train, b.data.X_train)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "mnist"}, "unknown dataset"),
        ({"model": "cnn"}, "a CNN needs images"),
        ({"dataset": "digits", "model": "cnn", "depth": 4}, "1 to 3 conv blocks"),
        ({"lr": 0.0}, "lr must be between"),
        ({"lr": float("nan")}, "lr must be between"),
        ({"epochs": 0}, "epochs must be between"),
        ({"width": 65}, "width must be between 1 and 64"),  # the page's slider stops at 64
        ({"lr": 5.0}, "lr must be between 0.0001 and 3"),  # the ends of the slider's stops
        ({"batch_size": 512}, "batch_size must be between 1 and 256"),
        ({"pace": 1.0}, "pace must be between 0 and 0.5"),
        ({"optimizer": "lion"}, "unknown optimizer"),
    ],
)
def test_bad_settings_are_named(changes, message):
    with pytest.raises(MaaslabError, match=message):
        StudioConfig(**changes)


def test_url_round_trip_and_nonsense():
    cfg = StudioConfig(dataset="digits", model="cnn", depth=3, lr=0.003, weight_decay=1e-4)
    again, warnings = config_from_params(StudioConfig, config_to_params(cfg))
    assert again == cfg and warnings == []
    got, warnings = config_from_params(
        StudioConfig,
        {"lr": "abc", "epochs": ["5", "0"], "noise": "inf", "model": "cnn", "unrelated": "x"},
    )
    assert got == StudioConfig()
    text = " | ".join(warnings)
    assert "ignored lr='abc' from the URL (expected a number); using 0.01" in text
    assert "ignored epochs='0'" in text  # the last of repeated values counts
    assert "ignored noise='inf' from the URL (not a finite number)" in text
    assert "a CNN needs images" in text and "unrelated" not in text


def test_live_views_read_snapshots_while_training():
    run = build_run(StudioConfig(dataset="moons", epochs=30, pace=0.0))
    job = TrainingJob(run.model, run.data, run.train_config, weights_every=0.0).start()
    assert job.join(60) and job.error is None
    snapshot = job.snapshot_model()
    x = torch.as_tensor(run.data.X_test, dtype=torch.float32)
    assert torch.equal(snapshot(x), run.model.cpu().eval()(x))  # the end of training is published
    assert any(not torch.equal(job.initial_weights[k], v) for k, v in job.weights().items())

    grid = boundary_grid(snapshot, run.data, resolution=20)
    assert grid.proba.shape == (20, 20, 2)
    np.testing.assert_allclose(grid.proba.sum(-1), 1.0, rtol=1e-5)
    fig = plots.decision_boundary(grid, run.data)
    assert fig.data[0].type == "heatmap" and fig.layout.title.text == "Decision boundary"
    hist = plots.weight_histograms(job.weights(), job.initial_weights)
    assert {t.name for t in hist.data} == {"initial", "now"}
    assert len(hist.data) == 2 * 3  # hidden1, hidden2, output
    for initial, now in zip(hist.data[::2], hist.data[1::2], strict=True):
        assert initial.xbins == now.xbins  # shared bins


def test_boundary_grid_matches_direct_predictions():
    run = build_run(StudioConfig(dataset="gaussians"))
    grid = boundary_grid(run.model, run.data, resolution=7)
    x, y = grid.xs[3], grid.ys[5]
    direct = torch.softmax(run.model(torch.tensor([[x, y]], dtype=torch.float32)), 1)
    np.testing.assert_allclose(grid.proba[5, 3], direct[0].detach().numpy(), rtol=1e-5)
    digits = build_run(StudioConfig(dataset="digits"))
    with pytest.raises(MaaslabError, match="2-D classification"):
        boundary_grid(digits.model, digits.data)
    cm = confusion_on_val(digits.model, digits.data)
    assert cm.shape == (10, 10) and cm.sum() == len(digits.data.y_val)


def test_save_run_refuses_bad_names_and_running_jobs(runs_dir):
    run = build_run(StudioConfig(epochs=2, pace=0.0))
    job = TrainingJob(run.model, run.data, run.train_config).start()
    for bad in ("../up", "", "a/b", ".hidden", "x" * 65):
        with pytest.raises(MaaslabError, match="is not a model name"):
            save_run(job, bad)
    job.join(60)
    folder = save_run(job, "moons-mlp")
    assert (folder / "model.safetensors").is_file() and folder.parent == runs_dir / "models"
    # saving reads the test split once: the folder records it next to the validation figures
    metrics = read_metadata(folder)["metrics"]
    _, test_accuracy = evaluate_split(job.model, job.data, "test")
    assert metrics["test_accuracy"] == pytest.approx(test_accuracy)
    assert metrics["val_accuracy"] == pytest.approx(job.history.last.val_accuracy)
    assert saved_note(folder) == (
        f"Saved to {folder} (test accuracy {test_accuracy:.3f}, measured once, on saving)"
    )
    with pytest.raises(MaaslabError, match="already exists"):
        save_run(job, "moons-mlp")


def test_every_studio_field_has_a_default_the_page_can_show():
    for field in dataclasses.fields(StudioConfig):
        assert field.default is not dataclasses.MISSING
