"""Explain: SHAP and LIME side by side on a table row, a digit or a text, with trust numbers."""

import streamlit as st
from components import digits_test, keep_outcome, pick_model, watch_task

from maaslab import plots
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
        x = data.X_test[int(i)]
        p = model.predict_fn(x[None, :])[0]
        truth = data.class_names[data.y_test[int(i)]]
        return (
            x,
            f"Row {int(i)}: truly **{truth}**; the model says "
            f"{data.class_names[p.argmax()]} ({p.max():.0%})",
        )
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


def show(report, x) -> None:
    """The methods side by side, then the quality panel."""
    methods = list(report.attributions)
    for start in range(0, len(methods), 3):
        cols = st.columns(min(3, len(methods) - start))
        for col, method in zip(cols, methods[start : start + 3], strict=False):
            attr = report.attributions[method]
            with col:
                st.subheader(METHODS[method].label)
                fig = plots.attribution_figure(attr, x if report.kind == "image" else None)
                fig.update_layout(title=None)
                st.plotly_chart(fig, key=f"explain.fig.{method}")
                st.caption(
                    f"{attr.evaluations:,} model evaluations · {attr.seconds:.2f} s · "
                    f"base {attr.base_value:.3f} + sum {attr.values.sum():+.3f} vs "
                    f"prediction {attr.prediction:.3f}"
                )
    if report.kind == "tabular" and st.toggle("Waterfalls", key="explain.waterfall"):
        cols = st.columns(len(methods))
        for col, method in zip(cols, methods, strict=True):
            col.plotly_chart(
                plots.waterfall(report.attributions[method]), key=f"explain.wf.{method}"
            )

    st.header("How far to trust them")
    st.table(report.trust_table())
    left, right = st.columns(2)
    named = {METHODS[m].label: report.faithfulness[m] for m in methods}
    left.plotly_chart(plots.deletion_curves(named), key="explain.deletion")
    right.plotly_chart(plots.deletion_curves(named, insertion=True), key="explain.insertion")
    if report.agreement:
        st.markdown(
            "**Agreement** (Spearman rank correlation of the attributions; 1 = same ranking)"
        )
        st.table(report.agreement_table())
    if report.sanity:
        st.caption(
            "Sanity check (Adebayo et al. 2018): the same method on a copy of the model with "
            "random weights. A map that barely changes (similarity ≥ 0.5) explains the input, "
            "not the model."
        )
    st.caption(f"The whole report took {report.seconds:.1f} s.")


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
