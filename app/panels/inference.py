"""The Inference page's parts: one panel per model kind (digits, sentiment, generator,
embedder), the attention view they share, and the streamed-text box."""

import time

import numpy as np
import streamlit as st
from components import digits_test

from maaslab import plots
from maaslab.errors import MaaslabError
from maaslab.models.gpt import MAX_NEW_TOKENS
from maaslab.reviews import load_reviews
from maaslab.zoo import image_to_pixels, nearest_sentences, paint

ss = st.session_state
CANVAS, GENERATED = "infer.canvas", "infer.generated"
REDRAW_S = 0.05  # streamed text is redrawn at most this often
SHOWN_TOKENS = 48  # an attention heatmap shows at most this many tokens (the last ones)
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp"]
EXAMPLE_REVIEW = "I expected to hate it, but honestly it was not bad at all."
EXAMPLE_PROMPT = "The for statement "
EXAMPLE_QUERY = "Why does a learning rate that is too large make the loss explode?"


def on_click() -> None:
    """A click on the canvas darkens that cell a step."""
    points = ss["infer.canvas_chart"].selection.points
    if points:
        ss[CANVAS] = paint(ss[CANVAS], int(points[0]["customdata"]))


@st.cache_data(show_spinner=False)
def test_review_count() -> int:
    """How many test reviews the corpus holds (the split a sentiment model's accuracy is on)."""
    return len(load_reviews("test"))


def cost(model, seconds: float) -> str:
    """The device and latency line shown under every answer."""
    return f"device {model.device} · {seconds * 1000:.1f} ms"


def truncation_notice(truncated: bool, limit: str) -> None:
    """Say so when the model saw only the start of a long text."""
    if truncated:
        st.warning(
            f"The text is longer than the model reads: only {limit} were used.",
            icon=":material/content_cut:",
        )


def attention_panel(model, text: str, key: str) -> None:
    """Attention weights of one layer and head over `text`'s tokens."""
    try:
        att = model.attention(text)
    except MaaslabError as err:
        st.info(str(err))
        return
    layers, heads = att.weights.shape[:2]
    left, right = st.columns(2)
    layer = left.selectbox("Layer", range(1, layers + 1), index=layers - 1, key=f"{key}.layer")
    head = right.selectbox("Head", range(1, heads + 1), key=f"{key}.head")
    weights, tokens = att.head(layer, head, last=SHOWN_TOKENS)
    if len(tokens) < len(att.tokens):
        st.caption(f"The last {SHOWN_TOKENS} of {len(att.tokens)} tokens are shown.")
    if att.truncated:
        st.caption("The text was cut to the model's window first.")
    title = f"Layer {layer}, head {head}"
    st.plotly_chart(plots.attention_heatmap(weights, tokens, title=title), key=f"{key}.chart")


def digit_input(source: str | None) -> tuple[np.ndarray | None, int | None]:
    """A drawing, an upload or a test image, shown; (its 64 pixels or None, its true label)."""
    if source == "Draw":
        ss.setdefault(CANVAS, np.zeros(64, dtype=np.float32))
        if st.button("Clear", icon=":material/ink_eraser:"):
            ss[CANVAS] = np.zeros(64, dtype=np.float32)
        st.plotly_chart(
            plots.digit_canvas(ss[CANVAS]),
            key="infer.canvas_chart",
            on_select=on_click,
            selection_mode="points",
        )
        return ss[CANVAS], None
    if source == "Upload":
        upload = st.file_uploader(
            "A picture of one digit (PNG or JPEG)", type=IMAGE_TYPES, key="infer.upload"
        )
        if upload is None:
            return None, None
        try:
            pixels = image_to_pixels(upload.getvalue())
        except MaaslabError as err:
            st.error(f"{upload.name}: {err}")
            return None, None
        st.plotly_chart(plots.digit_canvas(pixels, title="Your picture at 8×8"))
        return pixels, None
    X, y = digits_test()
    index = st.slider("Test image", 0, len(y) - 1, 0, key="infer.index")
    pixels, true = X[index], int(y[index])
    st.plotly_chart(plots.digit_canvas(pixels, title=f"Test image {index} · label {true}"))
    return pixels, true


def digits_panel(model) -> None:
    """Pick a test image, draw one, or upload a picture; see the class probabilities."""
    source = st.segmented_control(
        "Input", ["Test sample", "Draw", "Upload"], default="Test sample", key="infer.source"
    )
    left, right = st.columns(2, gap="large")
    with left:
        pixels, true = digit_input(source)
    with right:
        if pixels is None:
            st.info("Upload a picture of a digit on the left.")
        elif not np.any(pixels):
            st.info("The image is blank: click cells on the left to draw a digit.")
        else:
            out = model.predict(pixels)
            st.plotly_chart(plots.probability_bars(out.probabilities[0], true_label=true))
            st.markdown(f"**Prediction: {out.labels[0]}**")
            st.caption(cost(model, out.seconds))


def sentiment_panel(model) -> None:
    """Type a review; see the label, both probabilities and the latency."""
    text = st.text_area("A review", EXAMPLE_REVIEW, max_chars=200_000, key="infer.review")
    try:
        out = model.predict([text])
    except MaaslabError as err:
        st.error(str(err))
        return
    truncation_notice(out.truncated[0], f"its first {model.model.config.max_length} tokens")
    left, right = st.columns([2, 3], gap="large")
    with left:
        confidence = out.probabilities[0].max()
        st.markdown(f"**Sentiment: {out.labels[0]}** ({confidence:.0%} sure)")
        st.caption(cost(model, out.seconds))
        accuracy = model.metadata.get("test_accuracy", {}).get("overall")
        if accuracy:
            st.caption(
                f"{accuracy:.1%} right on the {test_review_count()} test reviews of assets/reviews"
            )
    with right:
        st.plotly_chart(plots.probability_bars(out.probabilities[0], model.class_names))
    with st.expander("Attention: which tokens each token looks at"):
        attention_panel(model, text, "infer.sent_att")


def stream_text(prompt: str, stream) -> tuple[str, float]:
    """Show the prompt and the tokens as they arrive; return (new text, seconds sampling).

    The screen is redrawn at most every REDRAW_S: a redraw per token would cost the browser
    more than sampling it. The seconds count only the model's time, not the redraws.
    """
    box = st.empty()
    text, sampling, shown = "", 0.0, 0.0
    while True:
        started = time.perf_counter()
        piece = next(stream, None)
        sampling += time.perf_counter() - started
        if piece is None:
            break
        text += piece
        if time.perf_counter() - shown > REDRAW_S:
            box.code(prompt + text + "▌", language=None, wrap_lines=True)
            shown = time.perf_counter()
    box.code(prompt + text, language=None, wrap_lines=True)
    return text, sampling


def gpt_panel(model) -> None:
    """A prompt and sampling settings; the continuation streams in as it is sampled."""
    prompt = st.text_area("Prompt", EXAMPLE_PROMPT, max_chars=10_000, key="infer.prompt")
    c1, c2, c3, c4, c5 = st.columns(5)
    max_new = c1.number_input(
        f"Max new tokens (1–{MAX_NEW_TOKENS})", value=200, step=50, key="infer.max_tokens"
    )
    temperature = c2.slider("Temperature", 0.1, 2.0, 0.8, 0.1, key="infer.temperature")
    top_k = c3.number_input("Top-k (0 = off)", 0, model.tokenizer.vocab_size, 0, key="infer.top_k")
    top_p = c4.slider("Top-p", 0.05, 1.0, 0.95, 0.05, key="infer.top_p")
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key="infer.seed")
    if st.button("Generate", type="primary", icon=":material/play_arrow:", key="infer.generate"):
        ss.pop(GENERATED, None)
        try:
            stream = model.generate(
                prompt, int(max_new), temperature, int(top_k) or None, top_p, int(seed)
            )
        except MaaslabError as err:
            st.error(str(err))
            return
        ss[GENERATED] = (prompt, *stream_text(prompt, stream), int(max_new))
    elif GENERATED in ss:
        st.code(ss[GENERATED][0] + ss[GENERATED][1], language=None, wrap_lines=True)
    if GENERATED in ss:
        start, text, seconds, count = ss[GENERATED]
        st.caption(f"{count} tokens · {count / seconds:.0f} tokens/s · {cost(model, seconds)}")
        with st.expander("Attention over the last 64 characters", expanded=False):
            attention_panel(model, start + text, "infer.gpt_att")
    else:
        st.info("Press Generate: the text appears character by character as it is sampled.")


def embed_panel(model, sentences: list[str], corpus: np.ndarray) -> None:
    """A query; the nearest of `sentences` (embedded as `corpus`) by cosine similarity."""
    query = st.text_area(
        "Find the passages of the guides closest to…",
        EXAMPLE_QUERY,
        max_chars=200_000,
        key="infer.query",
    )
    try:
        out = model.embed([query])
    except MaaslabError as err:
        st.error(str(err))
        return
    truncation_notice(out.truncated[0], f"its first {model.encoder.max_length} tokens")
    st.markdown(f"{len(sentences)} sentences searched")
    st.caption(cost(model, out.seconds))
    st.table(nearest_sentences(out.embeddings, corpus, sentences, k=5))
    with st.expander("Attention: which tokens each token looks at"):
        attention_panel(model, query, "infer.emb_att")
