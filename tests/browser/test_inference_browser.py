"""Inference page in Chromium: draw a digit by clicking cells and get a prediction."""

import re

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
        page.mouse.click(box["x"] + box["width"] * (col + 0.5) / 8,
                         box["y"] + box["height"] * (row + 0.5) / 8)  # fmt: skip
        page.wait_for_timeout(700)
    expect(page.get_by_text(re.compile(r"Prediction: \d"))).to_be_visible(timeout=20_000)
    expect(page.get_by_text("The image is blank")).to_have_count(0)
    shot("inference-drawn")
