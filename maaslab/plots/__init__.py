"""Plotly figures built from results. Pages call st.plotly_chart(fig), notebooks fig.show().

Functions here return go.Figure and never display anything, so a page and a notebook that pass
the same result get the same figure. One module per area; everything is re-exported here.
"""

from maaslab.plots.attention import attention_heatmap, heads_grid
from maaslab.plots.compress import speedup_bars, variant_scatter
from maaslab.plots.distributed import communication_volume, loss_match, scaling_bars
from maaslab.plots.embeddings import (
    embedding_scatter,
    phenomenon_accuracy_bars,
    similarity_matrix,
)
from maaslab.plots.explain import (
    attribution_bars,
    attribution_figure,
    deletion_curves,
    image_attribution,
    summary_dots,
    token_attribution,
    waterfall,
)
from maaslab.plots.federated import (
    drift_curve,
    label_mix,
    privacy_utility_chart,
    rounds_curve,
    server_view,
)
from maaslab.plots.linreg import (
    batch_size_comparison,
    fitted_lines,
    loss_contour,
    loss_vs_step,
    schedule_plot,
)
from maaslab.plots.llm import engine_tiles, kv_block_map, scheduler_timeline, ttft_itl
from maaslab.plots.llm_load import request_streams
from maaslab.plots.metrics import class_metric_bars, reliability_diagram
from maaslab.plots.recurrence import accuracy_by_distance, gradient_by_position
from maaslab.plots.scratch import gradcheck_bars, loss_comparison
from maaslab.plots.serve import (
    batch_size_histogram,
    latency_histogram,
    load_curves,
    throughput_timeline,
)
from maaslab.plots.serve_live import dashboard_tiles, latency_timeline, live_timeline
from maaslab.plots.surfaces import add_click_targets, race_contour, race_loss, surface_contour
from maaslab.plots.text import sampling_bars
from maaslab.plots.training import (
    accuracy_curve,
    dataset_scatter,
    decision_boundary,
    grad_norm_curve,
    loss_curve,
    training_curves,
    weight_histograms,
)
from maaslab.plots.vision import (
    confusion_matrix_heatmap,
    conv_filter_grid,
    digit_canvas,
    digit_grid,
    feature_map_grid,
    misclassified_grid,
    probability_bars,
    run_comparison,
)

__all__ = [
    "accuracy_by_distance",
    "accuracy_curve",
    "add_click_targets",
    "attention_heatmap",
    "attribution_bars",
    "attribution_figure",
    "batch_size_comparison",
    "batch_size_histogram",
    "class_metric_bars",
    "communication_volume",
    "confusion_matrix_heatmap",
    "conv_filter_grid",
    "dashboard_tiles",
    "dataset_scatter",
    "decision_boundary",
    "deletion_curves",
    "digit_canvas",
    "digit_grid",
    "drift_curve",
    "embedding_scatter",
    "engine_tiles",
    "feature_map_grid",
    "fitted_lines",
    "grad_norm_curve",
    "gradcheck_bars",
    "gradient_by_position",
    "heads_grid",
    "image_attribution",
    "kv_block_map",
    "label_mix",
    "latency_histogram",
    "latency_timeline",
    "live_timeline",
    "load_curves",
    "loss_comparison",
    "loss_contour",
    "loss_curve",
    "loss_match",
    "loss_vs_step",
    "misclassified_grid",
    "phenomenon_accuracy_bars",
    "privacy_utility_chart",
    "probability_bars",
    "race_contour",
    "race_loss",
    "reliability_diagram",
    "request_streams",
    "rounds_curve",
    "run_comparison",
    "sampling_bars",
    "scaling_bars",
    "schedule_plot",
    "scheduler_timeline",
    "server_view",
    "similarity_matrix",
    "speedup_bars",
    "summary_dots",
    "surface_contour",
    "throughput_timeline",
    "token_attribution",
    "training_curves",
    "ttft_itl",
    "variant_scatter",
    "waterfall",
    "weight_histograms",
]
