"""The shipped model folders in assets/models, and the recipes that rebuild them.

`python -m maaslab assets` reruns every recipe (seeded, on the CPU) and writes the folders the
app, the notebooks and the server load by name, so nothing has to be trained before a first
demo. Each recipe is a plain call of the shared training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from maaslab.data import load_dataset
from maaslab.errors import MaaslabError
from maaslab.models import build_model
from maaslab.paths import ASSETS_DIR
from maaslab.registry import save_model
from maaslab.runtime import seed_everything
from maaslab.train import TrainConfig, run_metadata, train

MODELS_DIR = ASSETS_DIR / "models"


@dataclass(frozen=True)
class Recipe:
    """How one shipped model is made."""

    name: str  # the model's name everywhere (CLI, app, server)
    description: str  # one line for listings
    build: Callable[[Path], Path]  # writes the model folder into the given parent, returns it


def _digits(name: str, model_type: str, config: dict, epochs: int) -> Callable[[Path], Path]:
    def build(parent: Path) -> Path:
        data = load_dataset("digits", seed=0)
        seed_everything(0)
        model = build_model(model_type, **config)
        cfg = TrainConfig(epochs=epochs, batch_size=32, optimizer="adam", lr=0.003, seed=0,
                          device="cpu", cpu_threads=1)  # fmt: skip
        history = train(model, data, cfg)
        meta = run_metadata(data, cfg, history)
        meta["input"] = "pixels (N, 64), sklearn digits scale 0-16"
        return save_model(model, parent / name, metadata=meta, overwrite=True)

    return build


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "digits-mlp",
            "MLP 64-64-64-10 on 8x8 digits (20 epochs, Adam 0.003)",
            _digits(
                "digits-mlp", "mlp", {"in_features": 64, "hidden": (64, 64), "out_features": 10}, 20
            ),
        ),
        Recipe(
            "digits-cnn",
            "CNN (16, 32 filters, 2x upsampling) on 8x8 digits (20 epochs, Adam 0.003)",
            _digits("digits-cnn", "cnn", {"channels": (16, 32), "upsample": 2}, 20),
        ),
    )
}


def build_assets(names: list[str] | None = None, parent: Path = MODELS_DIR) -> list[Path]:
    """Rebuild the named shipped models (all when None) into `parent`; return their folders."""
    names = names or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise MaaslabError(f"no recipe for {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    parent.mkdir(parents=True, exist_ok=True)
    return [RECIPES[name].build(parent) for name in names]
