"""Pick the compute device (cuda, mps or cpu) and describe the machine for the UI."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass

import torch

from maaslab.errors import MaaslabError

DEVICE_ENV = "MAASLAB_DEVICE"
KNOWN_DEVICES = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def get_device(preferred: str | None = None) -> torch.device:
    """Return the device to compute on: the argument, else $MAASLAB_DEVICE, else the best present.

    Parameters
    ----------
    preferred : "cpu", "cuda", "cuda:1", "mps" or "auto"/None. An explicit device that is not
        present raises MaaslabError instead of silently falling back.
    """
    choice = (preferred or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = choice.split(":", 1)[0]
    if kind not in KNOWN_DEVICES:
        raise MaaslabError(
            f"unknown device {choice!r}: use one of auto, {', '.join(KNOWN_DEVICES)}"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise MaaslabError(f"device {choice!r} asked for, but this machine has no CUDA GPU")
    if kind == "mps" and not _mps_available():
        raise MaaslabError(f"device {choice!r} asked for, but MPS is not available here")
    try:
        return torch.device(choice)
    except RuntimeError as err:
        raise MaaslabError(f"bad device {choice!r}: {err}") from None


@dataclass(frozen=True)
class DeviceInfo:
    """What the sidebar and `maaslab doctor` show about the machine."""

    device: str  # "cpu", "cuda", "mps"
    name: str  # GPU model or CPU/platform name
    torch_version: str
    threads: int  # torch intra-op threads
    cuda_version: str | None  # CUDA runtime torch was built with, None on CPU builds
    python: str

    def as_dict(self) -> dict[str, object]:
        """Plain dict for JSON and tables."""
        return asdict(self)

    def summary(self) -> str:
        """One line, e.g. 'cpu · x86_64 · torch 2.13.0 · 2 threads'."""
        return f"{self.device} · {self.name} · torch {self.torch_version} · {self.threads} threads"


def describe(device: torch.device | str | None = None) -> DeviceInfo:
    """Describe the chosen (or auto-picked) device, the torch build and the thread count."""
    dev = torch.device(device) if device is not None else get_device()
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    elif dev.type == "mps":
        name = f"Apple {platform.machine()}"
    else:
        name = platform.processor() or platform.machine() or "cpu"
    return DeviceInfo(
        device=dev.type,
        name=name,
        torch_version=torch.__version__.split("+", 1)[0],
        threads=torch.get_num_threads(),
        cuda_version=torch.version.cuda,
        python=platform.python_version(),
    )
