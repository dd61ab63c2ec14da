"""Model folders: `config.json` + `model.safetensors`, written atomically, read with checks.

A folder is the only way a model leaves memory. Weights are safetensors (a flat table of tensors
that cannot run code when read); pickle-based files (.bin, .pt, .pth, .pkl, .ckpt) are refused
with a message, never opened. Writes go to a hidden sibling folder that is renamed into place
once complete, so an interrupted save leaves the old folder (or nothing), never half a model.

This module knows folders, not names: `maaslab.auto.load(name or folder)`, above it, picks the
wrapper (maaslab.zoo) that serves a folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
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


@contextlib.contextmanager
def atomic_folder(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target` in one rename.

    On any exception the staging folder is removed and `target` is untouched.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise MaaslabError(f"{target} already exists; choose another folder or allow overwrite")
    if target.exists() and not target.is_dir():
        raise MaaslabError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        staging.rename(target)
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
