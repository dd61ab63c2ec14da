"""The Explain page's part: a report's methods side by side, then how far to trust them."""

import streamlit as st

from maaslab import plots
from maaslab.explain import METHODS


def attributions(report, x) -> None:
    """Each method's attribution, three to a row, with its cost; waterfalls for a table row."""
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
                st.caption(attr.summary())
    if report.kind == "tabular" and st.toggle("Waterfalls", key="explain.waterfall"):
        cols = st.columns(len(methods))
        for col, method in zip(cols, methods, strict=True):
            col.plotly_chart(
                plots.waterfall(report.attributions[method]), key=f"explain.wf.{method}"
            )


def show(report, x) -> None:
    """The methods side by side, then the quality panel."""
    attributions(report, x)
    st.header("How far to trust them")
    st.table(report.trust_table())
    left, right = st.columns(2)
    named = report.faithfulness_by_label()
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
