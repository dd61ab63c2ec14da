import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

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


# A save in another process that stops inside its staging folder (weights written, not yet
# renamed into place) until the file `go` appears; it writes the staging path to `ready` first.
BLOCKED_SAVE = """
import sys, time
from pathlib import Path
from maaslab import registry
from maaslab.models import build_model

target, ready, go = map(Path, sys.argv[1:])
write = registry.write_model_files

def write_then_wait(model, config, staging):
    write(model, config, staging)
    ready.write_text(str(staging))
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)

registry.write_model_files = write_then_wait
registry.save_model(build_model("mlp", in_features=4, hidden=(8,), out_features=3), target)
"""


def _blocked_save(target, tmp_path, tag):
    ready, go = tmp_path / f"{tag}.ready", tmp_path / f"{tag}.go"
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED_SAVE, str(target), str(ready), str(go)])
    return proc, ready, go


def _wait_for(path, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the save exited early ({proc.returncode})"
        assert time.monotonic() < deadline, "the save never reached its staging folder"
        time.sleep(0.05)
    return Path(path.read_text())


def test_a_save_killed_mid_way_is_tidied_up_and_a_live_one_is_not(tmp_path):
    models = tmp_path / "models"
    killed, killed_ready, _ = _blocked_save(models / "killed", tmp_path, "killed")
    live, live_ready, live_go = _blocked_save(models / "live", tmp_path, "live")
    try:
        killed_staging = _wait_for(killed_ready, killed)
        live_staging = _wait_for(live_ready, live)
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(30) == -signal.SIGKILL
        assert killed_staging.is_dir() and killed_staging.parent == models
        assert killed_staging.name.startswith(".killed.saving-")  # hidden, named after its owner

        save_model(_model(), models / "next")  # the next save into the folder tidies up
        assert not killed_staging.exists()
        assert live_staging.is_dir()  # its owner is still running: left alone
        assert sorted(p.name for p in models.iterdir() if p.name[0] != ".") == ["next"]

        live_go.touch()
        assert live.wait(60) == 0
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert load_model(models / "live").config.hidden == (8,)
    assert sorted(p.name for p in models.iterdir()) == ["live", "next"]


def _pid_of_an_ended_process() -> int:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return int(ended.stdout)


def test_only_hidden_folders_of_gone_processes_are_removed(tmp_path):
    dead = _pid_of_an_ended_process()
    me = os.getpid()
    for name in (
        f".a.saving-{dead}-0-x1",  # its process has ended
        f".b.saving-{me}-1-x2",  # this PID, but a process that started at another time
        ".c.other-folder",  # not a staging folder
        "d",
    ):
        (tmp_path / name).mkdir()
    assert sorted(p.name for p in registry.remove_stale_staging(tmp_path)) == [
        f".a.saving-{dead}-0-x1",
        f".b.saving-{me}-1-x2",
    ]
    with registry.atomic_folder(tmp_path / "e") as staging:
        assert registry.remove_stale_staging(tmp_path) == []  # a live save of this process
        assert staging.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.other-folder", "d", "e"]


def test_an_overwrite_killed_between_its_renames_gets_its_model_back(tmp_path):
    dead = _pid_of_an_ended_process()
    model = _model()
    save_model(model, tmp_path / f".m.replaced-{dead}-0-x1")  # moved aside, never replaced
    save_model(model, tmp_path / "n")
    save_model(model, tmp_path / f".n.replaced-{dead}-0-x2")  # replaced, not yet removed
    registry.remove_stale_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "n"]
    restored = load_model(tmp_path / "m").state_dict()
    assert all(torch.equal(v, restored[k]) for k, v in model.state_dict().items())
