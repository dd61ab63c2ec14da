"""Inference: call every shipped model by name and see its answer, device and latency; chat
with a language model (mini-llama), its answer streamed as the engine samples it; score a
classifier on its test split (precision, recall, F1, calibration)."""

import numpy as np
import streamlit as st
from components import pick_model
from panels.chat import chat_panel
from panels.inference import digits_panel, embed_panel, gpt_panel, sentiment_panel
from panels.scores import SCORED_KINDS, scores_panel

from maaslab.auto import LANGUAGE_MODELS, LOADERS, load
from maaslab.errors import MaaslabError
from maaslab.lessons import guide_sentences
from maaslab.serve.models import kind_of
from maaslab.zoo import ChatModel, shipped_folder


@st.cache_resource(show_spinner="Loading the model…")
def model_named(name: str):
    """Each model loads once per server; switching back to it is instant."""
    return load(name)


@st.cache_data(show_spinner="Embedding the corpus…")
def corpus_embeddings(name: str) -> tuple[list[str], np.ndarray]:
    """The sentences a query is compared with: every sentence of the lesson guides."""
    sentences = guide_sentences()
    return sentences, model_named(name).embed(sentences).embeddings


def built(name: str) -> bool:
    """False while a shipped model's folder is not in assets/models yet (mini-llama is trained
    by `python -m maaslab assets mini-llama`)."""
    try:
        shipped_folder(name)
    except MaaslabError:
        return False
    return True


st.title("Inference")
name = pick_model([*LOADERS, *LANGUAGE_MODELS], "infer.model")
if name in LANGUAGE_MODELS and not built(name):
    st.info(
        f"**{name} is not built yet.** Train it on this machine with "
        f"`python -m maaslab assets {name}`, then choose it here again; the other models "
        "work meanwhile.",
        icon=":material/construction:",
    )
    st.stop()
try:
    model = model_named(name)
except MaaslabError as err:
    st.error(f"{name} could not be loaded: {err}", icon=":material/error:")
    st.stop()
st.caption(f"Model `{name}` · device {model.device}")

# The wrapper's kind says which panel fits (the distilled student is a sentiment model too);
# a language model is a "generator" to the server, but here it gets a chat.
kind = kind_of(model)
if isinstance(model, ChatModel):
    chat_panel(model)
elif kind == "digits":
    digits_panel(model)
elif kind == "sentiment":
    sentiment_panel(model)
elif kind == "generator":
    gpt_panel(model)
else:
    embed_panel(model, *corpus_embeddings(name))
if kind in SCORED_KINDS:
    scores_panel(name, kind, model)
