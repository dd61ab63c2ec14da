import json
import pickle

import pytest
import torch

from maaslab import MaaslabError, registry, seed_everything
from maaslab.models import build_model
from maaslab.registry import load_model, read_metadata, save_model


def _model():
    seed_everything(0)
    return build_model("mlp", in_features=4, hidden=(8, 8), out_features=3, dropout=0.1)


def test_round_trip_is_bit_identical(tmp_path):
    model = _model()
    folder = save_model(model, tmp_path / "m", metadata={"dataset": "toy"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(folder)
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    assert loaded.config == model.config and not loaded.training
    assert read_metadata(folder) == {"dataset": "toy"}
    x = torch.randn(5, 4)
    assert torch.equal(model.eval()(x), loaded(x))


def test_refuses_a_pickle_file(tmp_path):
    folder = tmp_path / "hub-style"
    folder.mkdir()
    torch.save(_model().state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text('{"model_type": "mlp", "config": {}}')
    with pytest.raises(MaaslabError, match=r"refusing pytorch_model\.bin.*pickle"):
        load_model(folder)


def test_refuses_a_pickle_named_safetensors(tmp_path):
    folder = save_model(_model(), tmp_path / "m")
    (folder / "model.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(MaaslabError, match="corrupted or unreadable safetensors"):
        load_model(folder)


def test_truncated_weights_are_reported(tmp_path):
    folder = save_model(_model(), tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(MaaslabError, match="corrupted or unreadable safetensors"):
        load_model(folder)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "config.json").unlink(), "has no config.json"),
        (lambda f: (f / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda f: (f / "config.json").write_text("{}"), "does not name a model_type"),
        (lambda f: (f / "model.safetensors").unlink(), "has no model.safetensors"),
    ],
)
def test_damaged_folders_are_named(tmp_path, damage, message):
    folder = save_model(_model(), tmp_path / "m")
    damage(folder)
    with pytest.raises(MaaslabError, match=message):
        load_model(folder)


def test_weights_that_do_not_fit_the_config(tmp_path):
    folder = save_model(_model(), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["config"]["hidden"] = [8, 9]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MaaslabError, match="do not fit its config"):
        load_model(folder)


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(MaaslabError, match="model folder not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MaaslabError, match="is a file"):
        load_model(tmp_path / "file")


def test_existing_folder_needs_overwrite(tmp_path):
    save_model(_model(), tmp_path / "m")
    with pytest.raises(MaaslabError, match="already exists"):
        save_model(_model(), tmp_path / "m")
    save_model(_model(), tmp_path / "m", overwrite=True)


def test_failed_save_leaves_nothing_half_written(tmp_path, monkeypatch):
    old = save_model(_model(), tmp_path / "m")
    before = (old / "model.safetensors").read_bytes()

    def broken(state, path):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(registry, "state_to_safetensors", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(_model(), tmp_path / "m", overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        save_model(_model(), tmp_path / "new")
    assert (old / "model.safetensors").read_bytes() == before  # old folder untouched
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging folders left


def test_unknown_model_type(tmp_path):
    folder = save_model(_model(), tmp_path / "m")
    (folder / "config.json").write_text('{"model_type": "resnet", "config": {}}')
    with pytest.raises(MaaslabError, match="unknown model type 'resnet'"):
        load_model(folder)
