"""Inference: call every shipped model by name and see its answer, device and latency."""

import numpy as np
import pandas as pd
import streamlit as st

from maaslab import plots
from maaslab.data import load_dataset
from maaslab.errors import MaaslabError
from maaslab.lessons import guide_sentences
from maaslab.models.encoder import nearest
from maaslab.registry import load
from maaslab.zoo import LOADERS, paint

ss = st.session_state
CANVAS = "infer.canvas"


@st.cache_resource(show_spinner="Loading the model…")
def model_named(name: str):
    """Each model loads once per server; switching back to it is instant."""
    return load(name)


@st.cache_data(show_spinner=False)
def digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split as sklearn's 0-16 pixels, with labels."""
    data = load_dataset("digits", seed=0)
    return data.X_test * 16, data.y_test


@st.cache_data(show_spinner="Embedding the corpus…")
def corpus_embeddings(name: str) -> tuple[list[str], np.ndarray]:
    """The sentences a query is compared with: every sentence of the lesson guides."""
    sentences = guide_sentences()
    return sentences, model_named(name).embed(sentences).embeddings


def on_click() -> None:
    """A click on the canvas darkens that cell a step."""
    points = ss["infer.canvas_chart"].selection.points
    if points:
        ss[CANVAS] = paint(ss[CANVAS], int(points[0]["customdata"]))


st.title("Inference")
name = st.selectbox("Model", list(LOADERS), key="infer.model")
model = model_named(name)
st.caption(f"Model `{name}` · device {getattr(model, 'device', 'cpu')}")

if name.startswith("digits"):
    X, y = digits_test()
    source = st.segmented_control("Input", ["Test sample", "Draw"], default="Test sample",
                                  key="infer.source")  # fmt: skip
    left, right = st.columns(2, gap="large")
    with left:
        if source == "Draw":
            ss.setdefault(CANVAS, np.zeros(64, dtype=np.float32))
            if st.button("Clear", icon=":material/ink_eraser:"):
                ss[CANVAS] = np.zeros(64, dtype=np.float32)
            pixels, true = ss[CANVAS], None
            st.plotly_chart(plots.digit_canvas(pixels), key="infer.canvas_chart",
                            on_select=on_click, selection_mode="points")  # fmt: skip
        else:
            index = st.slider("Test image", 0, len(y) - 1, 0, key="infer.index")
            pixels, true = X[index], int(y[index])
            st.plotly_chart(plots.digit_canvas(pixels, title=f"Test image {index} · label {true}"))
    with right:
        if not np.any(pixels):
            st.info("The image is blank: click cells on the left to draw a digit.")
        else:
            out = model.predict(pixels)
            st.plotly_chart(plots.probability_bars(out.probabilities[0], true_label=true))
            st.markdown(f"**Prediction: {out.labels[0]}** · {out.seconds * 1000:.1f} ms")
else:
    sentences, corpus = corpus_embeddings(name)
    example = "Why does a learning rate that is too large make the loss explode?"
    query = st.text_area("Find the passages of the guides closest to…", example,
                         max_chars=100_000, key="infer.query")  # fmt: skip
    try:
        out = model.embed([query])
    except MaaslabError as err:
        st.error(str(err))
        st.stop()
    if out.truncated[0]:
        st.warning("Only the first 256 tokens of the text were used (the rest was truncated).")
    order, scores = nearest(out.embeddings, corpus, k=5)
    st.markdown(f"{len(sentences)} sentences searched · {out.seconds * 1000:.1f} ms to embed")
    st.table(pd.DataFrame({"cosine similarity": scores[0].round(3),
                           "sentence": [sentences[i] for i in order[0]]}))  # fmt: skip
