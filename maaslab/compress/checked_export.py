"""Export a compared variant and prove the folder works: load it back and predict held-out data.

`export_checked` is the rule the Compress page and lesson 12 share: write the variant with the
comparison's seed and threads (so the variant built there is reused, not rebuilt), load the
folder back the way the server will (`maaslab.auto.load`), and predict held-out examples with
it. `export_folder` names where the page writes: one plain folder inside runs/exports/.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maaslab.compress.export import export_variant
from maaslab.compress.splits import held_out
from maaslab.data import DIGIT_PIXEL_MAX
from maaslab.errors import MaaslabError
from maaslab.paths import ROOT, runs_dir
from maaslab.runtime import torch_threads

EXPORTS = "exports"  # exported variants go to runs/exports/<name>
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")  # one plain folder, no / or ..


@dataclass(frozen=True)
class CheckedExport:
    """A variant written as a model folder, and what the folder predicted once loaded back."""

    model: str
    variant: str
    folder: Path
    files: list[tuple[str, float]]  # (path inside the folder, MB), sorted
    labels: np.ndarray  # the test examples' true labels
    predicted: list  # the loaded folder's label for each example
    predicted_class: np.ndarray  # the index of that label (the argmax of the probabilities)
    confidence: np.ndarray  # its probability

    @property
    def shown_folder(self) -> str:
        """The folder relative to the repository when it is inside it, else absolute."""
        try:
            return str(self.folder.resolve().relative_to(ROOT))
        except ValueError:  # runs/ moved elsewhere with MAASLAB_RUNS
            return str(self.folder.resolve())

    def check(self) -> str:
        """One line on the first example: its label, the prediction, the confidence."""
        return (
            f"Loaded back with `auto.load`: test example 0 (label {self.labels[0]}) -> "
            f"predicted {self.predicted[0]} ({self.confidence[0]:.1%})."
        )

    def files_table(self) -> pd.DataFrame:
        """The folder's files and their sizes in MB, indexed by path."""
        return pd.DataFrame(self.files, columns=["file", "MB"]).set_index("file")

    def serve_command(self) -> str:
        """The shell command that serves the exported folder."""
        return f"python -m maaslab serve --models {shlex.quote(self.shown_folder)}"


def export_folder(name: str) -> Path:
    """runs/exports/<name>, once `name` is one plain folder name (MaaslabError otherwise)."""
    if not FOLDER_NAME.fullmatch(name) or set(name) == {"."}:
        raise MaaslabError(
            f"{name!r} is not a folder name: use letters, digits, '.', '_' or '-' (up to 80, "
            f"starting with a letter or digit), no '/' — it is created inside runs/{EXPORTS}/"
        )
    return runs_dir() / EXPORTS / name


def export_checked(
    model_name: str,
    variant: str,
    folder: str | Path,
    *,
    seed: int = 0,
    threads: int | None = None,
    overwrite: bool = False,
    examples: int = 1,
) -> CheckedExport:
    """Export `variant`, load the folder back with auto.load and predict held-out examples.

    Parameters
    ----------
    model_name, variant : as for export_variant.
    folder : the new model folder; refused if it exists unless `overwrite`.
    seed, threads : the comparison's, so the variant it built is reused.
    overwrite : replace an existing folder.
    examples : test examples the loaded folder predicts (the first ones).
    """
    from maaslab.auto import load

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise MaaslabError(
            f"{folder} already exists: choose another name, or tick 'Replace the folder if it "
            "exists'"
        )
    data = held_out(model_name, examples=examples)
    with torch_threads(threads):
        export_variant(model_name, variant, folder, seed=seed, overwrite=overwrite)
        # predict takes texts, or pixels on 0..16 (the held-out split is on 0..1)
        # a check that the folder works (it chooses nothing): the first test examples
        shown = data.test_inputs
        text = isinstance(shown, list)
        pred = load(folder).predict(shown if text else shown * DIGIT_PIXEL_MAX)
    files = sorted(
        (str(p.relative_to(folder)), p.stat().st_size / 1e6)
        for p in folder.rglob("*")
        if p.is_file()
    )
    picked = pred.probabilities.argmax(1)
    return CheckedExport(
        model=model_name,
        variant=variant,
        folder=folder,
        files=files,
        labels=np.asarray(data.test_labels),
        predicted=list(pred.labels),
        predicted_class=picked,
        confidence=pred.probabilities[np.arange(len(picked)), picked],
    )
