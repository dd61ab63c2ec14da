"""Inference: call every shipped model by name and see its answer, device and latency."""

import numpy as np
import streamlit as st
from components import pick_model
from panels.inference import digits_panel, embed_panel, gpt_panel, sentiment_panel

from maaslab.auto import LOADERS, load
from maaslab.lessons import guide_sentences
from maaslab.serve.models import kind_of


@st.cache_resource(show_spinner="Loading the model…")
def model_named(name: str):
    """Each model loads once per server; switching back to it is instant."""
    return load(name)


@st.cache_data(show_spinner="Embedding the corpus…")
def corpus_embeddings(name: str) -> tuple[list[str], np.ndarray]:
    """The sentences a query is compared with: every sentence of the lesson guides."""
    sentences = guide_sentences()
    return sentences, model_named(name).embed(sentences).embeddings


st.title("Inference")
name = pick_model(list(LOADERS), "infer.model")
model = model_named(name)
st.caption(f"Model `{name}` · device {model.device}")

# The wrapper's kind says which panel fits (the distilled student is a sentiment model too).
kind = kind_of(model)
if kind == "digits":
    digits_panel(model)
elif kind == "sentiment":
    sentiment_panel(model)
elif kind == "generator":
    gpt_panel(model)
else:
    embed_panel(model, *corpus_embeddings(name))
