"""Explain page in Chromium: a person picks a model, presses Explain and reads the answers."""

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def explain_and_wait(page: Page, charts: int) -> None:
    """Press Explain and wait for the report: one figure per method plus the two curves."""
    main = page.get_by_test_id("stMain")
    main.get_by_role("button", name="Explain").click()
    expect(page.get_by_text("How far to trust them")).to_be_visible(timeout=180_000)
    expect(page.get_by_text(re.compile(r"The whole report took [\d.]+ s"))).to_be_visible()
    expect(main.locator(".js-plotly-plot")).to_have_count(charts, timeout=30_000)
    page.wait_for_timeout(1500)  # let plotly finish drawing before a screenshot


def test_a_table_row_chosen_from_the_model_list(page: Page, app_url, shot):
    page.goto(f"{app_url}/explain")
    expect(page.get_by_role("heading", name="Explain")).to_be_visible(timeout=60_000)
    page.get_by_test_id("stMain").get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="breast-cancer gradient boosting (scikit-learn)").click()
    expect(page.get_by_text(re.compile(r"Row 0: truly"))).to_be_visible(timeout=60_000)
    explain_and_wait(page, charts=4)
    expect(page.get_by_role("heading", name="KernelSHAP")).to_be_visible()
    expect(page.get_by_role("heading", name="LIME")).to_be_visible()
    shot("explain-tabular")


def test_a_digit_with_the_sanity_check(page: Page, app_url, shot):
    page.goto(f"{app_url}/explain?model=digits-cnn")
    expect(page.get_by_text(re.compile(r"Test digit 0: label"))).to_be_visible(timeout=60_000)
    page.get_by_text("Sanity check (random weights; 2x the cost)").click()
    explain_and_wait(page, charts=5)
    expect(page.get_by_role("heading", name="DeepSHAP")).to_be_visible()
    expect(page.get_by_text("Sanity check (Adebayo et al. 2018)")).to_be_visible()
    shot("explain-digit")


def test_typed_text_and_an_empty_one(page: Page, app_url, shot):
    page.goto(f"{app_url}/explain?model=sentiment-minilm")
    box = page.get_by_label("Text to explain (up to 64 words)")
    expect(box).to_be_visible(timeout=60_000)
    box.fill("The trailer looked awful, but the film itself is a gem.")
    box.press("Control+Enter")
    page.wait_for_timeout(1000)
    explain_and_wait(page, charts=4)
    expect(page.get_by_role("heading", name="Partition SHAP")).to_be_visible()
    shot("explain-text")
    box.fill("   ")
    box.press("Control+Enter")
    page.wait_for_timeout(1000)
    page.get_by_test_id("stMain").get_by_role("button", name="Explain").click()
    expect(page.get_by_text("the text is empty: type a few words to explain")).to_be_visible(
        timeout=30_000
    )
