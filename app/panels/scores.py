"""The Inference page's scores of a classifier on its test split: precision, recall and F1 per
class and macro, and calibration (reliability diagram, expected calibration error)."""

import numpy as np
import streamlit as st
from components import digits_test

from maaslab import metrics, plots
from maaslab.reviews import load_reviews

SCORED_KINDS = ("digits", "sentiment")  # the classifiers, with a labelled test split each
TEST_SPLITS = {
    "digits": "test images of the digits dataset (seed 0)",
    "sentiment": "test reviews of assets/reviews",
}


@st.cache_data(show_spinner="Scoring the test split…")
def test_probabilities(name: str, kind: str, _model) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) probabilities of the model `name` on its test split, and the labels: computed once
    per model (the sentiment models read the test reviews, a few seconds on a CPU)."""
    if kind == "digits":
        pixels, labels = digits_test()
        return _model.predict(pixels).probabilities, labels
    reviews = load_reviews("test")
    return _model.predict(list(reviews.texts)).probabilities, reviews.labels


def scores_panel(name: str, kind: str, model) -> None:
    """A switch; when on, the model's scores on its test split, figures and table."""
    st.divider()
    if not st.toggle(
        "More than accuracy: precision, recall, F1 and calibration on the test split",
        key="infer.scores",
    ):
        return
    bins = st.slider(
        "Calibration bins",
        metrics.MIN_BINS,
        metrics.MAX_BINS,
        metrics.DEFAULT_BINS,
        key="infer.bins",
        help="Equal-width bins of the confidence, as scikit-learn's calibration_curve.",
    )
    proba, labels = test_probabilities(name, kind, model)
    scores = metrics.score_classifier(proba, labels, n_bins=bins)
    report, calibration = scores.report, scores.calibration
    columns = st.columns(5)
    for column, (label, value) in zip(
        columns,
        [
            ("accuracy", report.accuracy),
            ("macro precision", report.macro_precision),
            ("macro recall", report.macro_recall),
            ("macro F1", report.macro_f1),
            ("expected calibration error", calibration.ece),
        ],
        strict=True,
    ):
        column.metric(label, f"{value:.3f}")
    st.caption(f"{scores.n} {TEST_SPLITS[kind]} · `{name}` · {bins} confidence bins")
    names = list(model.class_names)
    note = metrics.undefined_note(report, names)
    if note:
        st.info(note, icon=":material/info:")
    left, right = st.columns(2, gap="large")
    with left:
        st.plotly_chart(plots.class_metric_bars(report, names), key="infer.scores_bars")
        st.caption(
            "Precision: of the examples predicted as a class, the share that are it. Recall: of "
            "a class's examples, the share found. F1: their harmonic mean. Macro: the plain mean "
            "over classes, so a rare class counts as much as a common one."
        )
    with right:
        st.plotly_chart(plots.reliability_diagram(calibration), key="infer.scores_reliability")
        st.caption(
            "Each bar: of the answers given with a confidence in that bin, the share that were "
            "right. A calibrated model's bars reach the dashed diagonal; red marks the gap to "
            "the bin's mean confidence. The expected calibration error averages the gaps, "
            "weighted by the examples in each bin (below)."
        )
    st.dataframe(
        metrics.report_frame(report, names).style.format(
            {"precision": "{:.3f}", "recall": "{:.3f}", "F1": "{:.3f}"}
        ),
        height="content",  # every class and the macro row, no inner scrolling
        key="infer.scores_table",
    )
