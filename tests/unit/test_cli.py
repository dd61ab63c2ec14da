"""The CLI as a user runs it: a fresh `python -m maaslab` process, exit codes, one-line errors."""

import subprocess
import sys

import pytest

from maaslab.registry import load_model


def run(*args, cwd=None, env_runs=None):
    import os

    env = dict(os.environ)
    if env_runs:
        env["MAASLAB_RUNS"] = str(env_runs)
    return subprocess.run(
        [sys.executable, "-m", "maaslab", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def test_help_lists_the_subcommands():
    out = run("--help")
    assert out.returncode == 0
    for sub in ("doctor", "train", "evaluate"):
        assert sub in out.stdout
    train_help = run("train", "--help")
    assert train_help.returncode == 0
    for flag in ("--dataset", "--hidden", "--optimizer", "--lr", "--epochs", "--out", "--resume"):
        assert flag in train_help.stdout


def test_doctor_reports_device_versions_and_assets():
    out = run("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    for expected in ("device", "torch", "transformers", "MiniLM", "lessons", "status    ok"):
        assert expected in out.stdout


def test_train_saves_a_folder_that_evaluates_to_the_same_accuracy(tmp_path):
    out = run(
        "train",
        "--dataset",
        "moons",
        "--epochs",
        "15",
        "--hidden",
        "16,16",
        "--quiet",
        "--out",
        tmp_path / "moons",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"saved {tmp_path / 'moons'} (validation accuracy 0.")
    accuracy = out.stdout.split("test accuracy ")[1].split(",")[0]
    model = load_model(tmp_path / "moons")
    assert model.config.hidden == (16, 16)
    ev = run("evaluate", tmp_path / "moons")
    assert ev.returncode == 0, ev.stderr
    evaluated = float(ev.stdout.split("accuracy ")[1].split(" ")[0])
    assert evaluated == pytest.approx(float(accuracy), abs=5e-4)  # same model, same test split


def test_train_shows_tqdm_progress_and_defaults_to_runs(tmp_path):
    out = run("train", "--dataset", "xor", "--epochs", "3", env_runs=tmp_path / "runs")
    assert out.returncode == 0, out.stderr
    assert "3/3" in out.stderr and "epoch" in out.stderr  # the tqdm bar
    assert (tmp_path / "runs" / "models" / "xor-mlp" / "model.safetensors").is_file()


def test_checkpoint_and_resume_from_the_cli(tmp_path):
    ckpt = tmp_path / "ckpt"
    first = run(
        "train", "--epochs", "2", "--checkpoint-dir", ckpt, "--quiet", "--out", tmp_path / "a"
    )
    assert first.returncode == 0, first.stderr
    second = run(
        "train",
        "--epochs",
        "4",
        "--checkpoint-dir",
        ckpt,
        "--resume",
        "--quiet",
        "--out",
        tmp_path / "b",
    )
    assert second.returncode == 0, second.stderr
    assert "4 epochs" in second.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "--dataset", "mnist"), "unknown dataset 'mnist'"),
        (("train", "--model", "resnet"), "unknown model type 'resnet'"),
        (("train", "--optimizer", "lion"), "unknown optimizer 'lion'"),
        (("train", "--activation", "swish"), "unknown activation 'swish'"),
        (("train", "--hidden", "a,b"), "expected widths like 32,32"),
        (("train", "--resume"), "--resume needs --checkpoint-dir"),
        (("train", "--resume", "--checkpoint-dir", "missing"), "no training checkpoint"),
        (("evaluate", "no/such/folder"), "model folder not found: no/such/folder"),
        (("launch",), "invalid choice: 'launch'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    args = [a if a != "missing" else tmp_path / "missing" for a in args]
    out = run(*args, cwd=tmp_path, env_runs=tmp_path / "runs")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


def test_corrupted_weights_and_existing_out(tmp_path):
    run("train", "--epochs", "1", "--quiet", "--out", tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    out = run("evaluate", tmp_path / "m")
    assert out.returncode == 2 and "corrupted or unreadable safetensors" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    again = run("train", "--epochs", "1", "--quiet", "--out", tmp_path / "m")
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr
    assert weights.stat().st_size == 100  # untouched
