"""The model repository: names and versions become paths inside the root, or a message."""

import shutil

import numpy as np
import pytest

from maaslab.auto import load
from maaslab.data import load_dataset
from maaslab.errors import MaaslabError
from maaslab.paths import MODELS_DIR
from maaslab.serve.repository import (
    ModelRepository,
    NotInRepository,
    check_name,
    check_version,
    init_demo_repository,
)

SHIPPED = MODELS_DIR / "digits-mlp"


def add_version(root, name, version, source=SHIPPED):
    """A copy of a shipped model folder as <root>/<name>/<version>."""
    folder = root / name / version
    shutil.copytree(source, folder)
    return folder


@pytest.fixture
def repo(tmp_path):
    for name, version in [("digits", "1"), ("digits", "2"), ("digits", "10"), ("mlp", "3")]:
        add_version(tmp_path, name, version)
    (tmp_path / "README.md").write_text("not a model")
    (tmp_path / ".hidden").mkdir()  # not a valid name: skipped
    (tmp_path / "digits" / "latest").mkdir()  # not a version: skipped
    (tmp_path / "digits" / "07").mkdir()  # leading zero: skipped, not served as 7
    return ModelRepository(tmp_path)


@pytest.mark.parametrize("name", ["digits", "digits-mlp", "a", "v1.2_x", "9" * 64])
def test_plain_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("http://x", "never from a URL"),
        ("file:///etc", "never from a URL"),
        ("file:x", "never from a URL"),
        ("s3:bucket", "never from a URL"),
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share", "absolute path"),
        ("../x", r"'\.\.' could leave"),
        ("..", r"'\.\.' could leave"),
        ("a/b", "without '/'"),
        ("a\\b", "without '/'"),
        ("a\x00b", "NUL"),
        ("", "empty"),
        (".hidden", "starting with a letter or a digit"),
        ("-rf", "starting with a letter or a digit"),
        ("a b", "letters, digits"),
        ("x" * 65, "1 to 64"),
    ],
)
def test_bad_names_are_refused_with_their_reason(name, message):
    with pytest.raises(MaaslabError, match=message) as caught:
        check_name(name)
    assert type(caught.value) is MaaslabError  # a 400, not a 404
    assert getattr(caught.value, "status", 400) == 400


@pytest.mark.parametrize("version", ["1", "2", "10", "999999999"])
def test_versions_pass(version):
    assert check_version(version) == version


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("01", "leading zero: write 1"),
        ("007", "leading zero: write 7"),
        ("0", "count from 1"),
        ("1234567890", "at most 9 digits"),
        ("-1", "positive integer"),
        ("1.0", "positive integer"),
        ("latest", "positive integer"),
        ("", "empty"),
        ("\u0661", "positive integer"),  # an Arabic-Indic one: a digit, but not ASCII
    ],
)
def test_bad_versions_are_refused(version, message):
    with pytest.raises(MaaslabError, match=message):
        check_version(version)


def test_the_root_must_be_an_existing_folder(tmp_path):
    with pytest.raises(MaaslabError, match="does not exist"):
        ModelRepository(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MaaslabError, match="is a file"):
        ModelRepository(tmp_path / "file")


def test_names_and_versions_sorted_numerically(repo, tmp_path):
    assert repo.root == tmp_path.resolve()
    assert repo.names() == ["digits", "mlp"]
    versions = repo.versions("digits")
    assert list(versions) == ["1", "2", "10"]  # 2 before 10; "latest" and "07" skipped
    assert versions["10"] == (tmp_path / "digits" / "10").resolve()
    assert repo.folder("mlp", "3") == (tmp_path / "mlp" / "3").resolve()


def test_missing_models_and_versions_are_404s_naming_what_exists(repo):
    with pytest.raises(NotInRepository, match=r"no model 'gpt'.*holds digits, mlp") as caught:
        repo.versions("gpt")
    assert caught.value.status == 404
    with pytest.raises(NotInRepository, match="no version 4: it has 1, 2, 10"):
        repo.folder("digits", "4")
    with pytest.raises(MaaslabError, match="leading zero"):
        repo.folder("digits", "07")  # exists on disk, but is not a version name
    with pytest.raises(MaaslabError, match="never from a URL"):
        repo.folder("http://evil/model", "1")


def test_a_version_symlink_outside_the_root_is_refused(repo, tmp_path_factory):
    outside = add_version(tmp_path_factory.mktemp("elsewhere"), "m", "1")
    (repo.root / "digits" / "5").symlink_to(outside, target_is_directory=True)
    with pytest.raises(MaaslabError, match="digits/5: symlink leads outside the repository"):
        repo.folder("digits", "5")
    with pytest.raises(MaaslabError, match="digits/5: symlink leads outside"):
        repo.versions("digits")


def test_a_symlink_inside_the_root_is_followed(repo):
    (repo.root / "digits" / "11").symlink_to(repo.root / "mlp" / "3", target_is_directory=True)
    assert repo.folder("digits", "11") == repo.root / "mlp" / "3"
    assert list(repo.versions("digits")) == ["1", "2", "10", "11"]


def test_a_symlink_to_the_root_itself_is_refused(repo):
    (repo.root / "loop").symlink_to(repo.root, target_is_directory=True)
    with pytest.raises(MaaslabError, match="'loop': symlink leads outside"):
        repo.versions("loop")


def test_a_model_folder_symlink_outside_the_root_is_refused(repo, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    add_version(elsewhere, "m", "1")
    (repo.root / "stolen").symlink_to(elsewhere / "m", target_is_directory=True)
    assert "stolen" in repo.names()
    with pytest.raises(MaaslabError, match="model 'stolen': symlink leads outside"):
        repo.folder("stolen", "1")


def test_a_weights_file_linked_from_outside_is_refused(repo, tmp_path_factory):
    folder = repo.root / "mlp" / "3"
    (folder / "model.safetensors").unlink()
    outside = tmp_path_factory.mktemp("elsewhere") / "model.safetensors"
    shutil.copyfile(SHIPPED / "model.safetensors", outside)
    (folder / "model.safetensors").symlink_to(outside)
    with pytest.raises(MaaslabError, match=r"model\.safetensors is a symlink that leads outside"):
        repo.folder("mlp", "3")


def test_a_version_without_config_json_is_refused(repo):
    (repo.root / "mlp" / "3" / "config.json").unlink()
    with pytest.raises(MaaslabError, match=r"mlp/3 has no config\.json"):
        repo.folder("mlp", "3")


def test_a_pickle_only_version_is_refused_by_the_registry_check(repo):
    folder = repo.root / "mlp" / "3"
    (folder / "model.safetensors").rename(folder / "model.pt")
    with pytest.raises(MaaslabError, match=r"refusing model\.pt.*pickle"):
        repo.folder("mlp", "3")


def test_index_lists_every_version_with_its_state(repo, tmp_path_factory):
    outside = add_version(tmp_path_factory.mktemp("elsewhere"), "m", "1")
    (repo.root / "digits" / "5").symlink_to(outside, target_is_directory=True)
    (repo.root / "mlp" / "3" / "config.json").unlink()
    (repo.root / "empty").mkdir()
    (repo.root / "away").symlink_to(outside.parent, target_is_directory=True)
    index = repo.index()
    states = {(e["name"], e["version"]): e["state"] for e in index}
    assert states == {
        ("away", ""): "UNAVAILABLE",
        ("digits", "1"): "READY",
        ("digits", "2"): "READY",
        ("digits", "5"): "UNAVAILABLE",
        ("digits", "10"): "READY",
        ("empty", ""): "UNAVAILABLE",
        ("mlp", "3"): "UNAVAILABLE",
    }
    assert [(e["name"], e["version"]) for e in index][1:5] == [
        ("digits", "1"),
        ("digits", "2"),
        ("digits", "5"),
        ("digits", "10"),
    ]
    reasons = {(e["name"], e["version"]): e["reason"] for e in index}
    assert "symlink leads outside the repository" in reasons[("digits", "5")]
    assert "symlink leads outside the repository" in reasons[("away", "")]
    assert "has no config.json" in reasons[("mlp", "3")]
    assert "no version folders" in reasons[("empty", "")]
    assert reasons[("digits", "1")] == ""


def test_demo_repository_holds_two_different_loadable_models(tmp_path):
    repo = init_demo_repository(tmp_path / "repo")
    assert repo.names() == ["digits"]
    versions = repo.versions("digits")
    assert list(versions) == ["1", "2"]
    assert "<name>/<version>/config.json" in (repo.root / "README.md").read_text()
    for folder in versions.values():
        assert not folder.is_symlink()
        assert not any(p.is_symlink() for p in folder.iterdir())
    assert sorted(p.name for p in (repo.root / "digits").iterdir()) == ["1", "2"]  # no staging
    digits = load_dataset("digits", seed=0)
    pixels = digits.X_test * 16  # the wrapper takes sklearn's 0-16 pixels
    mlp, cnn = load(versions["1"]), load(versions["2"])
    p1, p2 = mlp.predict(pixels).probabilities, cnn.predict(pixels).probabilities
    # The same numbers as the shipped models: copies, not retrained ones.
    np.testing.assert_allclose(p1, load("digits-mlp").predict(pixels).probabilities, atol=1e-6)
    np.testing.assert_allclose(p2, load("digits-cnn").predict(pixels).probabilities, atol=1e-6)
    assert not np.allclose(p1, p2, atol=1e-3)  # version 2 is another model
    assert np.mean(p1.argmax(1) == digits.y_test) > 0.9
    assert np.mean(p2.argmax(1) == digits.y_test) > 0.9


def test_demo_repository_refuses_a_non_empty_root_unless_forced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MaaslabError, match="is not empty: choose an empty or new folder"):
        init_demo_repository(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(MaaslabError, match="is a file"):
        init_demo_repository(tmp_path / "file")
    repo = init_demo_repository(tmp_path, force=True)
    assert list(repo.versions("digits")) == ["1", "2"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    again = init_demo_repository(tmp_path, force=True)  # overwrites its own demo in place
    assert sorted(p.name for p in (again.root / "digits").iterdir()) == ["1", "2"]
