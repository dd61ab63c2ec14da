"""Model folders: `config.json` + `model.safetensors`, written atomically, read with checks.

A folder is the only way a model leaves memory. Weights are safetensors (a flat table of tensors
that cannot run code when read); pickle-based files (.bin, .pt, .pth, .pkl, .ckpt) are refused
with a message, never opened. Writes go to a hidden sibling folder that is renamed into place
once complete, so an interrupted save leaves the old folder (or nothing), never half a model.
A save killed mid-way (kill -9, a power cut) cannot tidy up after itself: its hidden folder is
named after the process that owns it, and the next save into the same folder removes the hidden
folders whose owner has gone (and puts back a model an interrupted overwrite had moved aside).

This module knows folders, not names: `maaslab.auto.load(name or folder)`, above it, picks the
wrapper (maaslab.zoo) that serves a folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from maaslab import __version__
from maaslab.errors import MaaslabError
from maaslab.models import build_model, model_config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


# A hidden sibling of a model folder, made by atomic_folder: ".NAME.saving-PID-START-xxxxxxxx"
# while a save writes it, ".NAME.replaced-PID-START-xxxxxxxx" for the folder an overwrite moves
# aside. PID and START (the process's start time, so a reused PID is not mistaken for the owner)
# name the process that made it.
_HIDDEN = re.compile(r"\.(?P<name>.+)\.(?P<kind>saving|replaced)-(?P<pid>\d+)-(?P<start>\d+)-\w+")


def _start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has finished


def _owner_tag() -> str:
    """PID-START of this process, for the names of the hidden folders it makes."""
    pid = os.getpid()
    return f"{pid}-{_start_time(pid) or 0}"


def _owner_alive(pid: int, start: str) -> bool:
    if os.name == "nt":
        return True  # no safe liveness check (os.kill would end the process): keep the folder
    if Path("/proc/self/stat").exists():
        now = _start_time(pid)
        return now is not None and start in ("0", now)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def remove_stale_staging(folder: str | Path) -> list[Path]:
    """Tidy up after saves into `folder` that were killed mid-way; return what was removed.

    A hidden staging folder whose owner process has gone is removed. A folder an interrupted
    overwrite had moved aside is put back if its model folder is missing (the new one never
    arrived), and removed otherwise. Hidden folders of live saves, in this process or another,
    are left alone.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _HIDDEN.fullmatch(path.name)
        if not match or not path.is_dir() or _owner_alive(int(match["pid"]), match["start"]):
            continue
        target = path.with_name(match["name"])
        if match["kind"] == "replaced" and not target.exists():
            with contextlib.suppress(OSError):  # another process may be restoring it too
                path.rename(target)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_folder(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target` in one rename.

    On any exception the staging folder is removed and `target` is untouched. Staging folders
    that saves killed mid-way left next to `target` are removed first (remove_stale_staging).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise MaaslabError(f"{target} already exists; choose another folder or allow overwrite")
    if target.exists() and not target.is_dir():
        raise MaaslabError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent)
    tag = _owner_tag()
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-{tag}-", dir=target.parent))
    try:
        yield staging
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.replaced-{tag}-{uuid.uuid4().hex[:8]}")
            target.rename(old)
        try:
            staging.rename(target)
        except BaseException:
            if old is not None:
                old.rename(target)  # put the previous folder back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write pretty JSON (the config and trainer-state format)."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def state_to_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """Save a flat name -> tensor table (contiguous CPU copies, so shared storage is fine)."""
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}, str(path))


def save_model(
    model: nn.Module,
    folder: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save `model` as a folder with config.json and model.safetensors; return the folder.

    Parameters
    ----------
    model : a MaaS Lab model (has `model_type` and a config dataclass).
    folder : destination; refused if it exists unless `overwrite`.
    metadata : extra JSON-able facts stored in config.json (dataset, metrics, classes...).
    overwrite : replace an existing folder (atomically).
    """
    config = model_config(model)
    config["maaslab_version"] = __version__
    config["metadata"] = metadata or {}
    with atomic_folder(folder, overwrite=overwrite) as staging:
        write_model_files(model, config, staging)
    return Path(folder)


def write_model_files(model: nn.Module, config: dict[str, Any], folder: Path) -> None:
    """Write config.json and model.safetensors into an existing (staging) folder."""
    write_json(folder / CONFIG_FILE, config)
    # A model built on a pretrained one (e.g. LoRA adapters on MiniLM) stores only what training
    # changed; it reads the rest from its base folder when it is built.
    state = model.trained_state() if hasattr(model, "trained_state") else model.state_dict()
    state_to_safetensors(state, folder / WEIGHTS_FILE)


def read_config(folder: str | Path) -> dict[str, Any]:
    """Read and check a model folder's config.json; refuse pickle-only folders."""
    folder = Path(folder)
    if not folder.exists():
        raise MaaslabError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise MaaslabError(f"{folder} is a file, not a model folder (config.json + {WEIGHTS_FILE})")
    if not (folder / WEIGHTS_FILE).is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise MaaslabError(
                f"refusing {pickles[0]} in {folder}: pickle-format weights can run code when "
                f"loaded; MaaS Lab loads only {WEIGHTS_FILE}"
            )
        raise MaaslabError(f"{folder} has no {WEIGHTS_FILE}")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MaaslabError(f"{folder} has no {CONFIG_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MaaslabError(f"{folder / CONFIG_FILE} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise MaaslabError(f"{folder / CONFIG_FILE} does not name a model_type")
    return config


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a damaged or non-safetensors file raises MaaslabError."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise MaaslabError(f"corrupted or unreadable safetensors file {path}: {err}") from None


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Load a folder's weights into a model built from its config (a clear message if they do
    not fit); models that save only part of themselves load through load_trained_state."""
    try:
        if hasattr(model, "load_trained_state"):
            model.load_trained_state(state)
        else:
            model.load_state_dict(state, strict=True)
    except (RuntimeError, MaaslabError) as err:
        first = str(err).strip().splitlines()[0]
        raise MaaslabError(f"weights in {folder} do not fit its config: {first}") from None


def load_model(folder: str | Path, *, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a model from its folder, load its weights, put it in eval mode on `device`."""
    folder = Path(folder)
    config = read_config(folder)
    model = build_model(config["model_type"], **config.get("config", {}))
    load_weights(model, read_safetensors(folder / WEIGHTS_FILE), folder)
    return model.to(device).eval()


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The metadata block of a model folder's config.json."""
    return dict(read_config(folder).get("metadata", {}))
