"""Explain: SHAP and LIME side by side on a table row, a digit or a text, with trust numbers."""

import streamlit as st
from components import digits_test, keep_outcome, pick_model, watch_task
from panels.explain import show

from maaslab.errors import MaaslabError
from maaslab.explain import (
    METHODS,
    STABILITY_SEEDS,
    breast_cancer_models,
    build_report,
    explain,
    explainable,
    methods_for,
)
from maaslab.jobs import Task

ss = st.session_state
TASK, REPORT = "explain.task", "explain.report"
MLP, BOOST = "breast-cancer MLP (torch)", "breast-cancer gradient boosting (scikit-learn)"
MODELS = (MLP, BOOST, "digits-cnn", "digits-mlp", "sentiment-minilm")
DEFAULTS = {
    "tabular": ["kernel_shap", "lime"],
    "image": ["deep_shap", "kernel_shap", "lime"],
    "text": ["partition_shap", "lime"],
}
EXAMPLE = "I expected to hate it, but honestly it was not bad at all."


@st.cache_resource(show_spinner="Training the breast-cancer models (a few seconds)…")
def tabular_models():
    """The torch MLP and the gradient-boosting model, trained once per server."""
    return breast_cancer_models(seed=0)


@st.cache_resource(show_spinner="Loading the model…")
def model_named(name: str):
    """Every model loads once per server."""
    if name == MLP:
        return tabular_models().mlp
    if name == BOOST:
        return tabular_models().boosting
    model = explainable(name)
    if model.kind == "text":
        # shap compiles its text code (numba) on first use: pay it here, once, not on the
        # learner's first Explain.
        explain(model, "warm up", "partition_shap", budget=8)
    return model


def pick_instance(model, name: str):
    """The input to explain, chosen the way that suits the model; (x, a line about it)."""
    if model.kind == "tabular":
        data = tabular_models().data
        i = st.number_input(
            f"Test row (0–{len(data.y_test) - 1})", 0, len(data.y_test) - 1, 0, key="explain.row"
        )
        return tabular_models().test_row(model, int(i))
    if model.kind == "image":
        X, y = digits_test(pixel_scale=False)  # 0..1, as the networks read them
        i = st.slider("Test digit", 0, len(y) - 1, 0, key="explain.digit")
        return X[i], f"Test digit {i}: label **{y[i]}**"
    text = st.text_area(
        "Text to explain (up to 64 words)", EXAMPLE, max_chars=20_000, key="explain.text"
    )
    return text, ""


def run(model, x, methods, seed, with_stability, with_sanity):
    """Start the report on a background thread."""
    ss.pop(REPORT, None)
    ss[TASK] = Task(
        lambda progress, cancel: build_report(
            model,
            x,
            methods,
            seed=seed,
            with_stability=with_stability,
            with_sanity=with_sanity,
            progress=progress,
            cancel=cancel,
        )
    ).start()


st.title("Explain")
name = pick_model(MODELS, "explain.model")
model = model_named(name)
x, about = pick_instance(model, name)
if about:
    st.markdown(about)
usable = methods_for(model)
default = [m for m in DEFAULTS[model.kind] if m in usable]
methods = st.multiselect(
    "Methods",
    usable,
    default=default,
    format_func=lambda m: METHODS[m].label,
    key=f"explain.methods.{model.kind}.{model.module is not None}",
)
c1, c2, c3 = st.columns(3)
seed = c1.number_input("Seed", 0, 2**31 - 1, 0, key="explain.seed")
with_stability = c2.toggle(
    f"Stability (seeds {', '.join(map(str, STABILITY_SEEDS))}; 3x the cost)",
    key="explain.stability",
)
with_sanity = c3.toggle(
    "Sanity check (random weights; 2x the cost)",
    key="explain.sanity",
    disabled=model.module is None,
    help="needs a torch model" if model.module is None else None,
)
busy = ss.get(TASK) is not None and ss[TASK].running
if st.button(
    "Explain", type="primary", icon=":material/insights:", disabled=busy, key="explain.go"
):
    ss.pop("explain.error", None)
    try:
        if not methods:
            raise MaaslabError("choose at least one method")
        checked = model.check_input(x)
    except MaaslabError as err:
        st.error(str(err))
    else:
        run(
            model,
            checked,
            methods,
            int(seed),
            with_stability,
            with_sanity and model.module is not None,
        )
        st.rerun()
watch_task(
    lambda: ss.get(TASK),
    keep_outcome(TASK, REPORT, "explain.error"),
    cancel_key="explain.cancel",
)
if "explain.error" in ss:
    st.error(ss["explain.error"])
report = ss.get(REPORT)
if report is not None:
    if report.model != model.name:
        st.info("The last report was for another model; press Explain for this one.")
    else:
        show(report, report.x)
elif not busy:
    st.info(
        "Choose methods and press Explain. SHAP and LIME answer side by side, with their cost "
        "and how faithful each answer is."
    )
