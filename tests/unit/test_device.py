import json
import subprocess
import sys

import pytest
import torch

from maaslab import MaaslabError
from maaslab.device import describe, get_device


def test_cpu_when_asked():
    assert get_device("cpu") == torch.device("cpu")


def test_env_override_honoured(monkeypatch):
    monkeypatch.setenv("MAASLAB_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert describe().device == "cpu"


def test_argument_beats_env(monkeypatch):
    monkeypatch.setenv("MAASLAB_DEVICE", "no-such-device")
    assert get_device("cpu").type == "cpu"


def test_unknown_device_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MAASLAB_DEVICE", "tpu")
    with pytest.raises(MaaslabError, match="unknown device 'tpu'"):
        get_device()


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_missing_cuda_is_not_silently_replaced(monkeypatch):
    monkeypatch.setenv("MAASLAB_DEVICE", "cuda")
    with pytest.raises(MaaslabError, match="no CUDA GPU"):
        get_device()


def test_auto_picks_what_is_present(monkeypatch):
    monkeypatch.delenv("MAASLAB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert get_device().type == expected


def test_describe_reports_torch_and_threads():
    info = describe("cpu")
    assert info.torch_version == torch.__version__.split("+")[0]
    assert info.threads == torch.get_num_threads() >= 1
    assert "torch" in info.summary() and info.as_dict()["device"] == "cpu"


def test_override_reaches_a_fresh_process():
    env = {"MAASLAB_DEVICE": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "maaslab", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["device"]["device"] == "cpu"
