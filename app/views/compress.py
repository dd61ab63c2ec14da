"""Compress: a model's variants measured side by side, the P5 verdict, and one exported."""

import os
import shlex

import pandas as pd
import streamlit as st
from components import keep_outcome, pick_model, watch_task

from maaslab import plots
from maaslab.compress import COMPRESSIBLE, VARIANTS, compare, variants_for
from maaslab.compress.checked_export import export_checked, export_folder
from maaslab.compress.verdict import GOAL_SPEEDUP, p5_verdict
from maaslab.errors import MaaslabError
from maaslab.jobs import Task

ss = st.session_state
TASK, RESULT, EXPORTED = "compress.task", "compress.result", "compress.exported"
CHEAP = {"digits-cnn": ["int8-dynamic", "onnx-int8"], "sentiment-minilm": ["onnx-int8"]}


def run(model: str, variants: list[str], repeats: int, shap_inputs: int, threads: int, seed):
    """Start the comparison on a background thread."""
    ss.pop(RESULT, None)
    ss.pop(EXPORTED, None)
    ss.pop("compress.error", None)
    ss["compress.run_seed"] = seed  # the export rebuilds (or reuses) the variant with this seed
    ss[TASK] = Task(
        lambda progress, cancel: compare(
            model,
            ["fp32", *variants],
            repeats=repeats,
            shap_inputs=shap_inputs,
            seed=seed,
            threads=threads,
            progress=progress,
            cancel=cancel,
        )
    ).start()


@st.cache_resource(show_spinner="Loading the ONNX exporter and SHAP (once per server)…")
def prepare() -> bool:
    """Import what a comparison uses once, behind a spinner, before the first run starts.

    (The app's config turns off Streamlit's garbage-collection pass after every script run,
    which with these modules loaded starved the comparison's thread.)
    """
    import shap  # noqa: F401
    import torch.onnx._internal.exporter._compat  # noqa: F401

    return True


def table(comparison) -> pd.DataFrame:
    """The comparison as shown: one row per variant, its error (if any) in the last column."""
    rows = []
    for r in comparison.rows:
        rows.append(
            {
                "variant": r.name,
                "accuracy (%)": None if r.accuracy is None else 100 * r.accuracy,
                "drop (points)": r.accuracy_drop,
                "ms batch 1": r.latency_ms_1,
                "ms batch 32": r.latency_ms_32,
                "speed-up batch 1": r.speedup_1,
                "speed-up batch 32": r.speedup_32,
                "MB on disk": r.size_mb,
                "SHAP difference": r.shap_difference,
                "build s": r.build_seconds,
                "error": r.error or "",
            }
        )
    return pd.DataFrame(rows).set_index("variant").astype({"error": str})


def verdict(comparison) -> None:
    """P5: the fastest variant within 1 point of fp32's accuracy, against the 2x goal."""
    said = p5_verdict(comparison)
    (st.success if said.met else st.warning)(said.text(markdown=True))


def show(comparison) -> None:
    """Table, verdict, figures, and the run's conditions."""
    formats = {
        "accuracy (%)": "{:.1f}",
        "drop (points)": "{:+.1f}",
        "ms batch 1": "{:.3g}",
        "ms batch 32": "{:.3g}",
        "speed-up batch 1": "{:.2f}x",
        "speed-up batch 32": "{:.2f}x",
        "MB on disk": "{:.3f}",
        "SHAP difference": "{:.3f}",
        "build s": "{:.1f}",
    }
    st.table(table(comparison).style.format(formats, na_rep="—"))
    failed = [r.name for r in comparison.rows if r.error]
    if failed:
        st.error(f"Not measured: {', '.join(failed)} (the reason is in the error column).")
    verdict(comparison)
    left, right = st.columns(2)
    left.plotly_chart(plots.variant_scatter(comparison, GOAL_SPEEDUP), key="compress.scatter")
    right.plotly_chart(plots.speedup_bars(comparison, GOAL_SPEEDUP), key="compress.speedups")
    st.caption(
        f"Latency: median of {comparison.repeats} calls per variant and batch size, taken in "
        f"turn across the variants, {comparison.threads} CPU thread(s); timings on a shared "
        f"machine move from run to run, accuracy does not. Accuracy on {comparison.examples} "
        f"held-out examples; SHAP difference on {comparison.shap_inputs} input(s) (0 = the same "
        f"explanation as fp32). The comparison took {comparison.seconds:.1f} s."
    )


def export_section(comparison) -> None:
    """Write one compared variant as a model folder, then load it back and predict once."""
    st.header("Export a variant")
    usable = [r.name for r in comparison.rows if r.error is None]
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
        shown = done.shown_folder
        st.success(f"Exported **{done.variant}** to `{shown}`. {done.check()}")
        files = pd.DataFrame(done.files, columns=["file", "MB"]).set_index("file")
        st.table(files.style.format({"MB": "{:.3f}"}))
        st.markdown("Serve it (Open Inference Protocol and the Serve page read it like any model):")
        st.code(f"python -m maaslab serve --models {shlex.quote(shown)}", language="bash")


st.title("Compress")
st.markdown(
    "Quantization, pruning, distillation and ONNX Runtime, measured side by side on a shipped "
    "model: accuracy on the held-out split, latency, size on disk, and how far each variant's "
    "SHAP explanation moves from fp32's."
)
model = pick_model(COMPRESSIBLE, "compress.model", default="digits-cnn")  # the cheap one first
others = [v for v in variants_for(model) if v != "fp32"]
variants = st.multiselect(
    "Variants (fp32, the reference, is always measured)",
    others,
    default=[v for v in CHEAP[model] if v in others],
    key=f"compress.variants.{model}",
)
with st.expander("What each variant is"):
    st.markdown("\n".join(f"- **{v}**: {VARIANTS[v].description}" for v in ["fp32", *others]))
c1, c2, c3, c4 = st.columns(4)
repeats = c1.number_input("Timed calls per variant", 1, 200, 20, key="compress.repeats")
shap_inputs = c2.number_input("SHAP inputs (0 = skip)", 0, 5, 1, key="compress.shap")
threads = c3.number_input(
    "CPU threads",
    1,
    os.cpu_count() or 1,
    1,
    key="compress.threads",
    help="1 thread gives steadier timings when other work shares the cores",
)
seed = c4.number_input("Seed", 0, 2**31 - 1, 0, key="compress.seed")
busy = ss.get(TASK) is not None and ss[TASK].running
if st.button(
    "Compare", type="primary", icon=":material/compress:", disabled=busy, key="compress.go"
):
    prepare()
    run(model, variants, int(repeats), int(shap_inputs), int(threads), int(seed))
    st.rerun()
watch_task(
    lambda: ss.get(TASK),
    keep_outcome(TASK, RESULT, "compress.error"),
    cancel_key="compress.cancel",
    every=1.0,
)
if "compress.error" in ss:
    st.error(ss["compress.error"])
result = ss.get(RESULT)
if result is not None:
    if result.model != model:
        st.info(f"The last comparison was for {result.model}; press Compare for this model.")
    else:
        show(result)
        export_section(result)
elif not busy:
    st.info(
        "Choose variants and press Compare. Pruned and distilled variants fine-tune or train "
        "first (a minute or more); int8-dynamic and the ONNX ones take seconds."
    )
