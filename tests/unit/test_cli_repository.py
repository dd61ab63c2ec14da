"""`python -m maaslab repository`: the demo repository, and publishing a folder as a version."""

from maaslab.__main__ import main
from maaslab.registry import read_config
from maaslab.serve.repository import ModelRepository


def test_init_then_publish_writes_the_next_version(tmp_path, capsys):
    root = tmp_path / "repo"
    assert main(["repository", "init", str(root), "--versions", "1"]) == 0
    assert "digits/1: ready" in capsys.readouterr().out
    assert list(ModelRepository(root).versions("digits")) == ["1"]
    assert main(["repository", "publish", str(root), "digits", "digits-cnn"]) == 0
    out = capsys.readouterr().out
    assert "as digits/2" in out and "/v2/repository/models/digits/load" in out
    folders = ModelRepository(root).versions("digits")
    assert list(folders) == ["1", "2"]
    assert read_config(folders["2"])["model_type"] == "cnn"
    assert read_config(folders["1"])["model_type"] == "mlp"


def test_publish_refuses_names_that_leave_the_repository_and_non_model_folders(tmp_path, capsys):
    root = tmp_path / "repo"
    main(["repository", "init", str(root), "--versions", "1"])
    capsys.readouterr()
    assert main(["repository", "publish", str(root), "../x", "digits-cnn"]) == 2
    assert "'..' could leave the repository" in capsys.readouterr().err
    assert main(["repository", "publish", str(root), "digits", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and list(ModelRepository(root).versions("digits")) == ["1"]
    assert main(["repository", "init", str(root)]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
