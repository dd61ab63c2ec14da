"""Inference page in Chromium: draw a digit by clicking cells and get a prediction."""

import re
import time

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


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
    page.goto(f"{app_url}/inference?model=sentiment-minilm")
    expect(page.get_by_text(re.compile(r"Sentiment: positive"))).to_be_visible(timeout=60_000)
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
