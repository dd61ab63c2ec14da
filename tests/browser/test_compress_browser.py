"""Compress page in Chromium: a person compares two variants of digits-cnn and exports one."""

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def test_compare_two_variants_and_export_one(page: Page, app_url, shot):
    page.goto(f"{app_url}/compress?model=digits-cnn")
    main = page.get_by_test_id("stMain")
    expect(page.get_by_role("heading", name="Compress")).to_be_visible(timeout=60_000)
    # the default choice is the two cheap variants: int8-dynamic and onnx-int8
    expect(main.get_by_text("int8-dynamic").first).to_be_visible()
    main.get_by_role("button", name="Compare").click()
    expect(page.get_by_text(re.compile(r"The comparison took [\d.]+ s"))).to_be_visible(
        timeout=420_000
    )
    table = main.get_by_test_id("stTable").first
    for variant in ("fp32", "int8-dynamic", "onnx-int8"):
        expect(table.get_by_text(variant, exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"P5 \(≥ 2x faster"))).to_be_visible()
    expect(main.locator(".js-plotly-plot")).to_have_count(2, timeout=30_000)
    page.wait_for_timeout(1500)  # let plotly finish drawing before a screenshot
    shot("compress-compare")

    main.get_by_role("button", name="Export").click()
    expect(page.get_by_text("python -m maaslab serve --models")).to_be_visible(timeout=120_000)
    expect(page.get_by_text(re.compile(r"Loaded back with auto.load"))).to_be_visible()
    page.get_by_text("python -m maaslab serve --models").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    shot("compress-export")
