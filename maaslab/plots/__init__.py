"""Plotly figures built from results. Pages call st.plotly_chart(fig), notebooks fig.show().

Functions here return go.Figure and never display anything, so a page and a notebook that pass
the same result get the same figure. One module per area; everything is re-exported here.
"""

from maaslab.plots.scratch import gradcheck_bars, loss_comparison
from maaslab.plots.surfaces import race_contour, race_loss, surface_contour
from maaslab.plots.training import (
    accuracy_curve,
    dataset_scatter,
    grad_norm_curve,
    loss_curve,
    training_curves,
)

__all__ = [
    "accuracy_curve",
    "dataset_scatter",
    "grad_norm_curve",
    "gradcheck_bars",
    "loss_comparison",
    "loss_curve",
    "race_contour",
    "race_loss",
    "surface_contour",
    "training_curves",
]
