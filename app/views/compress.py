"""Compress: a model's variants measured side by side, the P5 verdict, and one exported."""

import os

import streamlit as st
from components import keep_outcome, pick_model, watch_task
from panels.compress import EXPORTED, export_section, show

from maaslab.compress import COMPRESSIBLE, VARIANTS, compare, variants_for
from maaslab.jobs import Task

ss = st.session_state
TASK, RESULT = "compress.task", "compress.result"
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


st.title("Compress")
st.markdown(
    "Quantization, pruning, distillation and ONNX Runtime, measured side by side on a shipped "
    "model: accuracy, latency, size on disk, and how far each variant's SHAP explanation moves "
    "from fp32's. The best variant is chosen on validation examples, which no variant trained "
    "on; the test split is read last, once, for the report."
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
