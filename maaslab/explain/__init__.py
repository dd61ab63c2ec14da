"""Explanations of the models the learner trained: SHAP and LIME side by side, with trust numbers.

`explain(model, x, method=..., seed=...)` returns an Attribution; `faithfulness`, `agreement`,
`stability` and `sanity_check` say how much to trust it. `explainable(...)` turns a shipped
model's name, a zoo wrapper, a torch module or a scikit-learn estimator into the Explainable
every method takes.
"""

from maaslab.explain.adapters import breast_cancer_models, explainable
from maaslab.explain.core import (
    MAX_WORDS,
    Attribution,
    Cancelled,
    Explainable,
    image,
    tabular,
    text,
    words_of,
)
from maaslab.explain.methods import METHODS, Method, explain, methods_for
from maaslab.explain.quality import (
    Curve,
    Faithfulness,
    SanityCheck,
    Stability,
    agreement,
    faithfulness,
    sanity_check,
    stability,
)
from maaslab.explain.report import STABILITY_SEEDS, Report, build_report

__all__ = [
    "MAX_WORDS",
    "METHODS",
    "STABILITY_SEEDS",
    "Attribution",
    "Cancelled",
    "Curve",
    "Explainable",
    "Faithfulness",
    "Method",
    "Report",
    "SanityCheck",
    "Stability",
    "agreement",
    "breast_cancer_models",
    "build_report",
    "explain",
    "explainable",
    "faithfulness",
    "image",
    "methods_for",
    "sanity_check",
    "stability",
    "tabular",
    "text",
    "words_of",
]
