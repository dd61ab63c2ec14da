"""The Compress page's parts: a comparison's table, verdict and figures, and the export of one
compared variant."""

import streamlit as st

from maaslab import plots
from maaslab.compress.checked_export import export_checked, export_folder
from maaslab.compress.verdict import (
    GOAL_SPEEDUP,
    TABLE_FORMATS,
    comparison_table,
    conditions,
    p5_verdict,
)
from maaslab.errors import MaaslabError

ss = st.session_state
EXPORTED = "compress.exported"


def show(comparison) -> None:
    """Table, P5 verdict, figures, and the run's conditions."""
    st.table(comparison_table(comparison).style.format(TABLE_FORMATS, na_rep="—"))
    if comparison.failed:
        failed = ", ".join(comparison.failed)
        st.error(f"Not measured: {failed} (the reason is in the error column).")
    said = p5_verdict(comparison)
    (st.success if said.met else st.warning)(said.text(markdown=True))
    left, right = st.columns(2)
    left.plotly_chart(plots.variant_scatter(comparison, GOAL_SPEEDUP), key="compress.scatter")
    right.plotly_chart(plots.speedup_bars(comparison, GOAL_SPEEDUP), key="compress.speedups")
    st.caption(conditions(comparison))


def export_section(comparison) -> None:
    """Write one compared variant as a model folder, then load it back and predict once."""
    st.header("Export a variant")
    usable = comparison.measured
    c1, c2 = st.columns(2)
    variant = c1.selectbox("Variant", usable, index=len(usable) - 1, key="compress.export.variant")
    name = c2.text_input(
        "Folder name (inside runs/exports/)",
        f"{comparison.model}-{variant}",
        max_chars=80,
        key=f"compress.export.name.{comparison.model}.{variant}",
    )
    overwrite = st.checkbox("Replace the folder if it exists", key="compress.export.overwrite")
    if st.button("Export", icon=":material/save:", key="compress.export.go"):
        ss.pop(EXPORTED, None)
        try:
            with st.spinner(f"Exporting {variant}…"):
                ss[EXPORTED] = export_checked(
                    comparison.model,
                    variant,
                    export_folder(name.strip()),
                    seed=ss.get("compress.run_seed", 0),
                    threads=comparison.threads,
                    overwrite=overwrite,
                )
        except MaaslabError as err:
            st.error(str(err))
    done = ss.get(EXPORTED)
    if done is not None:
        st.success(f"Exported **{done.variant}** to `{done.shown_folder}`. {done.check()}")
        st.table(done.files_table().style.format({"MB": "{:.3f}"}))
        st.markdown("Serve it (Open Inference Protocol and the Serve page read it like any model):")
        st.code(done.serve_command(), language="bash")
