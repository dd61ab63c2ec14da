"""The Serve page's Engine view in Chromium: run the shared-system-prompt workload in slow motion,
watch it live, read its numbers, then the same without prefix caching; then chat with static
batching."""

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

DONE = re.compile(r"\d+ steps · \d+ tokens in [\d.]+ s · \d+ preemptions · \d+ prefix-cache hits")


def metric(page: Page, label: str) -> str:
    """The value of the metric tile with this label."""
    tile = page.get_by_test_id("stMetric").filter(has=page.get_by_text(label, exact=True))
    return tile.get_by_test_id("stMetricValue").inner_text()


def test_watch_prefix_caching_and_static_batching(page: Page, app_url, shot):
    page.goto(f"{app_url}/serve")
    main = page.get_by_test_id("stMain")
    expect(page.get_by_role("heading", name="Serve", exact=True)).to_be_visible(timeout=60_000)
    main.get_by_role("tab", name="Engine").click()
    expect(main.get_by_text(re.compile(r"a random Llama|layers,"))).to_be_visible(timeout=60_000)
    expect(main.get_by_role("button", name="Start server")).to_have_count(0)  # the other tab

    main.get_by_role("radio", name="shared system prompt").click()
    expect(
        main.get_by_text("a 256-token system prompt before every short question")
    ).to_be_visible()
    requests = page.get_by_test_id("stSlider").filter(has=page.get_by_text("Requests"))
    for key in ("Home", *["ArrowRight"] * 11):  # 12 requests
        requests.get_by_role("slider").press(key)
    main.get_by_text(re.compile(r"^Slow motion")).click()
    page.wait_for_timeout(800)
    main.get_by_role("button", name="Run", exact=True).click()
    expect(main.get_by_role("button", name="Stop", exact=True)).to_be_visible(timeout=30_000)
    expect(main.locator(".js-plotly-plot")).to_have_count(3, timeout=30_000)
    page.wait_for_timeout(1500)  # a few live updates
    shot("engine-live")

    summary = main.get_by_text(DONE)
    expect(summary).to_be_visible(timeout=90_000)
    expect(page.get_by_test_id("stMetric")).to_have_count(6)  # the live view's tiles are gone
    hits = int(metric(page, "Prefix-cache hits").replace(",", ""))
    assert hits > 0 and metric(page, "Running / waiting") == "0 / 0"
    expect(main.locator(".js-plotly-plot")).to_have_count(3, timeout=30_000)
    page.mouse.move(5, 5)
    page.wait_for_timeout(1500)  # let plotly finish drawing
    top = main.get_by_test_id("stAlertContentSuccess")
    top.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    shot("engine-done")

    main.get_by_text("Prefix caching", exact=True).click()
    main.get_by_text(re.compile(r"^Slow motion")).click()
    page.wait_for_timeout(800)
    main.get_by_role("button", name="Run", exact=True).click()
    expect(main.get_by_text(re.compile(r"prefix caching off"))).to_be_visible(timeout=90_000)
    expect(page.get_by_test_id("stMetric")).to_have_count(6)
    assert metric(page, "Prefix-cache hits") == "0"
    assert int(metric(page, "Steps")) > 0
    top.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(1500)
    shot("engine-no-prefix-cache")

    main.get_by_role("radio", name="chat").click()
    main.get_by_text("Prefix caching", exact=True).click()
    main.get_by_text("Continuous batching", exact=True).click()
    page.wait_for_timeout(800)
    main.get_by_role("button", name="Run", exact=True).click()
    expect(
        main.get_by_text(re.compile(r"^chat · 12 requests .* continuous batching off"))
    ).to_be_visible(timeout=90_000)
    expect(page.get_by_test_id("stMetric")).to_have_count(6)
    assert int(metric(page, "Preemptions")) >= 0
    top.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.mouse.move(5, 5)
    page.wait_for_timeout(1500)
    shot("engine-static-batching")
