"""Colours and layout shared by every figure, so pages and notebooks look alike."""

from __future__ import annotations

TRAIN_COLOR = "#4f46e5"
TEST_COLOR = "#f97316"
VAL_COLOR = TEST_COLOR  # the held-out curve of a training run (validation) takes test's colour
STEP_COLOR = "rgba(79, 70, 229, 0.25)"
CLASS_COLORS = ("#f97316", "#2563eb", "#16a34a", "#dc2626", "#9333ea", "#0891b2")
# One colour per series when several runs or optimizers share a figure.
SERIES_COLORS = ("#4f46e5", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04")


def layout(height: int = 360) -> dict:
    """Keyword arguments for fig.update_layout that every figure shares."""
    return {
        "template": "plotly_white",
        "margin": {"l": 50, "r": 20, "t": 50, "b": 45},
        "legend": {"orientation": "h", "y": -0.2},
        "height": height,
    }
