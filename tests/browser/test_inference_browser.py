"""Inference page in Chromium: draw a digit by clicking cells and get a prediction; type a
review, a prompt, a picture; score a classifier on its test split; chat with a language model and
watch the answer stream in."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]


def test_draw_a_digit_by_clicking_cells(page: Page, app_url, shot):
    page.goto(f"{app_url}/inference")
    expect(page.get_by_role("heading", name="Inference")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(re.compile(r"Prediction: \d"))).to_be_visible(timeout=30_000)
    page.get_by_test_id("stButtonGroup").get_by_text("Draw", exact=True).click()
    expect(page.get_by_text("The image is blank")).to_be_visible(timeout=20_000)
    canvas = page.locator(".js-plotly-plot").first
    expect(canvas).to_contain_text("Click cells to draw", timeout=20_000)
    box = canvas.locator("rect.nsewdrag").first.bounding_box()
    for row, col in [(1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 4)]:  # a vertical stroke: a 1
        page.mouse.click(
            box["x"] + box["width"] * (col + 0.5) / 8, box["y"] + box["height"] * (row + 0.5) / 8
        )
        page.wait_for_timeout(700)
    expect(page.get_by_text(re.compile(r"Prediction: \d"))).to_be_visible(timeout=20_000)
    expect(page.get_by_text("The image is blank")).to_have_count(0)
    shot("inference-drawn")


def test_type_a_review_and_see_its_label(page: Page, app_url, shot):
    from maaslab.paths import MODELS_DIR
    from maaslab.registry import read_metadata
    from maaslab.reviews import load_reviews

    page.goto(f"{app_url}/inference?model=sentiment-minilm")
    expect(page.get_by_text(re.compile(r"Sentiment: positive"))).to_be_visible(timeout=60_000)
    accuracy = read_metadata(MODELS_DIR / "sentiment-minilm")["test_accuracy"]["overall"]
    caption = f"{accuracy:.1%} right on the {len(load_reviews('test'))} test reviews"
    expect(page.get_by_text(caption)).to_be_visible()
    box = page.get_by_label("A review")
    box.fill("What a waste of two hours. The plot made no sense and the acting was wooden.")
    box.press("Control+Enter")
    expect(page.get_by_text(re.compile(r"Sentiment: negative"))).to_be_visible(timeout=30_000)
    expect(page.get_by_text(re.compile(r"device cpu · [\d.]+ ms"))).to_be_visible()
    shot("inference-sentiment")
    box.fill("   ")
    box.press("Control+Enter")
    expect(page.get_by_text("the text is empty: type a few words")).to_be_visible(timeout=30_000)


def test_generation_streams_tokens_as_they_are_sampled(page: Page, app_url, shot):
    page.goto(f"{app_url}/inference?model=mini-gpt")
    expect(page.get_by_text("Press Generate")).to_be_visible(timeout=60_000)
    tokens = page.get_by_label("Max new tokens (1–1000)")
    tokens.fill("1000")
    tokens.press("Enter")
    page.wait_for_timeout(1000)
    main = page.get_by_test_id("stMain")
    before = len(main.inner_text())
    main.get_by_role("button", name="Generate").click()
    lengths = []
    deadline = time.time() + 60
    while time.time() < deadline:
        lengths.append(len(main.inner_text()))
        if "tokens/s" in main.inner_text():
            break
        page.wait_for_timeout(50)
    # The text grew in several visible steps before the run finished: it streamed.
    growing = sorted({n for n in lengths if n > before + 20})
    assert len(growing) >= 3, lengths
    expect(page.get_by_text(re.compile(r"1000 tokens · \d+ tokens/s"))).to_be_visible()
    shot("inference-generated")


def test_upload_a_picture_or_a_file_that_is_not_one(page: Page, app_url, tmp_path, shot):
    from PIL import Image

    from maaslab.data import load_dataset

    digit = load_dataset("digits", seed=0).X_test[0].reshape(8, 8)  # a 2
    Image.fromarray((255 - digit * 255).astype("uint8")).resize((80, 80)).save(tmp_path / "d.png")
    (tmp_path / "notes.png").write_text("this is text, not a picture")
    page.goto(f"{app_url}/inference?model=digits-cnn")
    expect(page.get_by_text(re.compile(r"Prediction: \d"))).to_be_visible(timeout=60_000)
    page.get_by_test_id("stButtonGroup").get_by_text("Upload", exact=True).click()
    chooser = page.locator("input[type=file]")
    chooser.set_input_files(str(tmp_path / "notes.png"))
    expect(page.get_by_text(re.compile(r"notes.png: that file is not an image"))).to_be_visible(
        timeout=30_000
    )
    chooser.set_input_files(str(tmp_path / "d.png"))
    expect(page.get_by_text("Prediction: 2")).to_be_visible(timeout=30_000)
    shot("inference-upload")


SCORES_SWITCH = "More than accuracy: precision, recall, F1 and calibration on the test split"


def test_more_than_accuracy_shows_the_test_split_scores(page: Page, app_url, shot):
    from maaslab import metrics
    from maaslab.auto import load
    from maaslab.data import load_dataset

    data = load_dataset("digits", seed=0)
    proba = load("digits-cnn").predict(data.X_test * 16).probabilities
    expected = metrics.score_classifier(proba, data.y_test)
    page.goto(f"{app_url}/inference?model=digits-cnn")
    expect(page.get_by_text(re.compile(r"Prediction: \d"))).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stMetric")).to_have_count(0)  # nothing scored until asked
    page.get_by_text(SCORES_SWITCH).click()
    tiles = page.get_by_test_id("stMetric")
    expect(tiles).to_have_count(5, timeout=60_000)
    expect(tiles.filter(has_text="macro F1")).to_contain_text(f"{expected.report.macro_f1:.3f}")
    ece = f"{expected.calibration.ece:.3f}"
    expect(tiles.filter(has_text="expected calibration error")).to_contain_text(ece)
    charts = page.locator(".js-plotly-plot")
    expect(
        charts.filter(has_text=f"Reliability · expected calibration error {ece}")
    ).to_be_visible()
    expect(charts.filter(has_text="macro F1")).to_be_visible()
    tiles.first.scroll_into_view_if_needed()
    shot("inference-scores-digits")
    # Eight bins instead of ten (for digits-cnn the ECE differs: 0.010 against 0.009): the
    # slider's keys move it, the figures follow.
    eight = f"{metrics.calibration(proba, data.y_test, n_bins=8).ece:.3f}"
    assert eight != ece
    thumb = (
        page.get_by_test_id("stSlider").filter(has_text="Calibration bins").get_by_role("slider")
    )
    thumb.focus()
    for _ in range(2):
        thumb.press("ArrowLeft")
    expect(page.get_by_text(re.compile(r"· 8 confidence bins"))).to_be_visible(timeout=30_000)
    expect(tiles.filter(has_text="expected calibration error")).to_contain_text(eight)
    expect(charts.filter(has_text=f"expected calibration error {eight}")).to_be_visible()


# --- the chat with a language model, on a tiny mini-llama ------------------------------------

# Streamlit runs pages in its own process; this one reads models from the folder given first.
SERVE_FROM = (
    "import pathlib, sys; import maaslab.zoo as zoo; zoo.MODELS_DIR = pathlib.Path(sys.argv.pop(1))"
    "; from streamlit.web.cli import main; main(prog_name='streamlit')"
)


@pytest.fixture(scope="module")
def tiny_app_url(tmp_path_factory):
    """The app, as `make app` starts it, with a tiny random mini-llama (the server tests' folder:
    mini-llama's tokenizer and chat template, a 256-token context) as its only model."""
    sys.path.insert(0, str(ROOT / "tests" / "server"))
    from test_server_llm import save_tiny

    models = tmp_path_factory.mktemp("models")
    save_tiny(models / "mini-llama", "llama")
    port = free_port()
    log = (tmp_path_factory.mktemp("tiny-app") / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", SERVE_FROM, str(models), "run", "app/streamlit_app.py"),
            *("--server.port", str(port), "--server.address", "127.0.0.1"),
            *("--server.headless", "true", "--browser.gatherUsageStats", "false"),
        ],
        cwd=ROOT,
        env={**os.environ, "MAASLAB_RUNS": str(tmp_path_factory.mktemp("runs"))},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, 60)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the app at {url} did not start")


# Every length the answer's text takes on screen, as the browser draws it.
WATCH_ANSWER = """() => {
    window.answerLengths = [];
    new MutationObserver(() => {
        const turns = document.querySelectorAll('[data-testid=stChatMessage]');
        if (turns.length > 1) window.answerLengths.push(turns[1].innerText.length);
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_chat_with_a_language_model_streams_the_answer(page: Page, tiny_app_url, shot):
    page.goto(f"{tiny_app_url}/inference?model=mini-llama")
    main = page.get_by_test_id("stMainBlockContainer")  # a page with a chat input has no stMain
    expect(main.get_by_text("Type a message below")).to_be_visible(timeout=60_000)
    tokens = page.get_by_label("Max new tokens (1–255)")
    tokens.fill("200")
    tokens.press("Enter")
    page.wait_for_timeout(1000)
    page.evaluate(WATCH_ANSWER)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("What does json.dumps do? Explain *args and __init__ too.")
    box.press("Enter")
    numbers = main.get_by_text(
        re.compile(r"200 new tokens after a \d+-token prompt · \d+ tokens/s")
    )
    expect(numbers).to_be_visible(timeout=60_000)
    # The answer grew in several drawn steps before its numbers came: it streamed.
    lengths = page.evaluate("window.answerLengths")
    assert len({n for n in lengths if n > 0}) >= 3, lengths
    turns = page.get_by_test_id("stChatMessage")
    expect(turns).to_have_count(2)
    expect(turns.first).to_contain_text("What does json.dumps do? Explain *args and __init__ too.")
    shot("inference-chat")
    main.get_by_role("button", name="Clear chat").click()
    expect(turns).to_have_count(0, timeout=20_000)
    expect(main.get_by_text("Type a message below")).to_be_visible()


def test_a_missing_mini_llama_says_how_to_build_it(page: Page, app_url):
    from maaslab.paths import MODELS_DIR

    if (MODELS_DIR / "mini-llama").is_dir():
        pytest.skip("mini-llama is built here: test_every_model_renders covers it")
    page.goto(f"{app_url}/inference?model=mini-llama")
    expect(page.get_by_text("mini-llama is not built yet")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("python -m maaslab assets mini-llama")).to_be_visible()
