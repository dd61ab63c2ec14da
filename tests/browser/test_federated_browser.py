"""Federated page in Chromium: a person skews the clients, runs a private, masked federation,
watches its rounds, and measures the privacy-utility trade-off."""

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def test_run_a_private_masked_federation_and_the_trade_off(page: Page, app_url, shot):
    page.goto(f"{app_url}/federated")
    main = page.get_by_test_id("stMain")
    expect(page.get_by_role("heading", name="Federated learning")).to_be_visible(timeout=60_000)
    expect(main.get_by_text("Who holds what (Dirichlet alpha = 0.3)").first).to_be_visible(
        timeout=30_000
    )
    shot("federated-start")

    main.get_by_text("DP-SGD on the clients").click()
    main.get_by_text("masked (SecAgg)").click()
    page.wait_for_timeout(500)
    main.get_by_role("button", name="Run").click()
    status = page.get_by_text(re.compile(r"Status: done · round 15/15"))
    expect(status).to_be_visible(timeout=180_000)
    expect(page.get_by_text(re.compile(r"epsilon [\d.]+ at delta 1e-05"))).to_be_visible()
    expect(main.get_by_text("update + pairwise masks").first).to_be_visible()
    page.wait_for_timeout(1500)  # let plotly finish drawing before a screenshot
    shot("federated-run")

    main.get_by_role("button", name="Measure the trade-off").click()
    expect(main.get_by_text("privacy: attack advantage (TPR - FPR)").first).to_be_visible(
        timeout=240_000
    )
    chart = main.locator(".js-plotly-plot").last
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)  # let plotly finish drawing before a screenshot
    saved = shot("federated-tradeoff")
    chart.screenshot(path=str(saved.with_name("federated-tradeoff-chart.png")))
