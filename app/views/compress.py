"""Compress: a model's variants measured side by side, the P5 verdict, and one exported."""

import os
import re
import shlex

import numpy as np
import pandas as pd
import streamlit as st

from maaslab import auto, plots
from maaslab.compress import COMPRESSIBLE, VARIANTS, compare, export_variant, variants_for
from maaslab.errors import MaaslabError
from maaslab.jobs import Task
from maaslab.paths import ROOT, runs_dir
from maaslab.runtime import torch_threads

ss = st.session_state
TASK, RESULT, EXPORTED = "compress.task", "compress.result", "compress.exported"
CHEAP = {"digits-cnn": ["int8-dynamic", "onnx-int8"], "sentiment-minilm": ["onnx-int8"]}
GOAL_SPEEDUP, MAX_DROP = 2.0, 1.0  # P5: at least 2x faster at batch 1, within 1 point
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")  # one plain folder, no / or ..


@st.cache_data(show_spinner=False)
def held_out_example(model: str):
    """One held-out input as the loaded model's predict takes it, and its label."""
    if model == "sentiment-minilm":
        from maaslab.reviews import load_reviews

        reviews = load_reviews("test")
        return reviews.texts[0], reviews.labels[0]
    from maaslab.data import load_dataset

    data = load_dataset("digits", seed=0)
    return data.X_test[0] * 16, data.y_test[0]  # predict() takes pixels on 0..16


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


@st.fragment(run_every=1.0)
def watch() -> None:
    """Progress and a Cancel button while the comparison runs; the page reruns when it ends."""
    task = ss.get(TASK)
    if task is None:
        return
    if task.running:
        st.progress(task.fraction, text=f"{task.stage} · {task.fraction:.0%}")
        if st.button("Cancel", icon=":material/stop:", key="compress.cancel"):
            task.cancel()
        return
    ss.pop(TASK)
    if task.error:
        ss["compress.error"] = task.error
    else:
        ss[RESULT] = task.result
    st.rerun()


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
    best = comparison.best(max_drop_points=MAX_DROP)
    if best is None:
        st.warning(f"No variant (fp32 included) could be measured within {MAX_DROP:g} point.")
        return
    line = (
        f"**P5** (≥ {GOAL_SPEEDUP:g}x faster than fp32 at batch 1, accuracy within "
        f"{MAX_DROP:g} point): the best variant is **{best.name}**, "
        f"{best.speedup_1:.2f}x at batch 1, {best.accuracy_drop:+.1f} points"
    )
    if best.name == "fp32":
        st.warning(f"{line}: no compressed variant beat fp32 within the accuracy budget.")
    elif best.speedup_1 >= GOAL_SPEEDUP:
        st.success(f"{line}: goal met.")
    else:
        st.warning(f"{line}: short of the {GOAL_SPEEDUP:g}x goal.")


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
            ss[EXPORTED] = export(comparison, variant, name.strip(), overwrite)
        except MaaslabError as err:
            st.error(str(err))
    done = ss.get(EXPORTED)
    if done is not None:
        shown = done["folder"]
        st.success(f"Exported **{done['variant']}** to `{shown}`. {done['check']}")
        files = pd.DataFrame(done["files"], columns=["file", "MB"]).set_index("file")
        st.table(files.style.format({"MB": "{:.3f}"}))
        st.markdown("Serve it (Open Inference Protocol and the Serve page read it like any model):")
        st.code(f"python -m maaslab serve --models {shlex.quote(shown)}", language="bash")


def export(comparison, variant: str, name: str, overwrite: bool) -> dict:
    """Export, load the folder back with auto.load and predict one held-out example."""
    if not FOLDER_NAME.fullmatch(name) or set(name) == {"."}:
        raise MaaslabError(
            f"{name!r} is not a folder name: use letters, digits, '.', '_' or '-' (up to 80, "
            "starting with a letter or digit), no '/' — it is created inside runs/exports/"
        )
    folder = runs_dir() / "exports" / name
    if folder.exists() and not overwrite:
        raise MaaslabError(
            f"{folder} already exists: choose another name, or tick 'Replace the folder if it "
            "exists'"
        )
    with st.spinner(f"Exporting {variant}…"), torch_threads(comparison.threads):
        # same threads and seed as the comparison: the variant built there is reused, not rebuilt
        export_variant(
            comparison.model,
            variant,
            folder,
            seed=ss.get("compress.run_seed", 0),
            overwrite=overwrite,
        )
    loaded = auto.load(folder)
    x, label = held_out_example(comparison.model)
    pred = loaded.predict([x] if isinstance(x, str) else np.asarray(x)[None])
    got = int(pred.labels[0]) if not isinstance(pred.labels[0], str) else pred.labels[0]
    files = sorted(
        (str(p.relative_to(folder)), p.stat().st_size / 1e6)
        for p in folder.rglob("*")
        if p.is_file()
    )
    try:
        shown = str(folder.resolve().relative_to(ROOT))
    except ValueError:  # runs/ moved elsewhere with MAASLAB_RUNS
        shown = str(folder.resolve())
    return {
        "variant": variant,
        "folder": shown,
        "files": files,
        "check": f"Loaded back with `auto.load`: held-out example 0 (label {label}) -> "
        f"predicted {got} ({pred.probabilities[0].max():.1%}).",
    }


st.title("Compress")
st.markdown(
    "Quantization, pruning, distillation and ONNX Runtime, measured side by side on a shipped "
    "model: accuracy on the held-out split, latency, size on disk, and how far each variant's "
    "SHAP explanation moves from fp32's."
)
if "compress.model" not in ss:
    # a link may open the page on one model; otherwise the cheap one comes first
    asked = st.query_params.get("model")
    ss["compress.model"] = asked if asked in COMPRESSIBLE else "digits-cnn"
model = st.selectbox("Model", COMPRESSIBLE, key="compress.model")
st.query_params["model"] = model
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
watch()
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
