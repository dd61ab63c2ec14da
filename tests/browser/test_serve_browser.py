"""Serve page in Chromium: start a server, send a review, watch a short load test, stop; chat
with mini-llama, and load-test it with a stream of requests."""

import contextlib
import os
import re
import signal

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

REVIEW = "A warm, funny film; I loved every minute of it."


def pick(page: Page, label: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `label`."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    box.get_by_role("combobox").click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_timeout(800)


def start_server(page: Page, models: str, request) -> None:
    """Click Start server, wait for the line that names `models`; the server is stopped at the
    test's end whatever happens (a failed step must not leave it running)."""
    page.get_by_test_id("stMain").get_by_role("button", name="Start server").click()
    serving = page.get_by_text(re.compile(rf"Serving {re.escape(models)} at"))
    expect(serving).to_be_visible(timeout=150_000)
    pid = int(re.search(r"pid (\d+)", serving.inner_text()).group(1))

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    request.addfinalizer(kill)


def test_start_call_load_and_stop_a_server(page: Page, app_url, shot, request):
    page.goto(f"{app_url}/serve")
    main = page.get_by_test_id("stMain")
    expect(page.get_by_role("heading", name="Serve", exact=True)).to_be_visible(timeout=60_000)
    start_server(page, "digits-cnn, sentiment-minilm", request)

    pick(page, "Model", "sentiment-minilm")
    box = page.get_by_label("A review")
    box.fill(REVIEW)
    box.press("Control+Enter")
    page.wait_for_timeout(800)
    main.get_by_role("button", name="Send request").click()
    expect(page.get_by_text("Sentiment: positive")).to_be_visible(timeout=60_000)
    main.get_by_text("What went over the wire (raw JSON)").click()
    expect(
        main.get_by_text(re.compile(r"POST http://127\.0\.0\.1:\d+/v2/models/sentiment"))
    ).to_be_visible()
    page.wait_for_timeout(1000)
    shot("serve-request")

    main.get_by_text("What went over the wire (raw JSON)").click()  # fold it away again
    heading = page.get_by_role("heading", name="Load test")
    duration = page.get_by_test_id("stSlider").filter(has=page.get_by_text("Duration (s)"))
    thumb = duration.get_by_role("slider")
    for key in ("Home", "ArrowRight", "ArrowRight"):  # a 4 s run
        thumb.press(key)
    page.wait_for_timeout(1000)
    main.get_by_role("button", name="Start load").click()
    expect(main.get_by_role("button", name="Stop load")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Throughput, last 3 s")).to_be_visible()
    page.wait_for_timeout(1500)  # a few half-second updates
    heading.evaluate("h => h.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    shot("serve-load-live")
    summary = page.get_by_text(re.compile(r"digits-cnn c=16: \d+/\d+ ok"))
    expect(summary).to_be_visible(timeout=60_000)
    charts = main.locator(".js-plotly-plot")  # the answer's bars and the load test's four
    expect(charts).to_have_count(5, timeout=30_000)
    page.wait_for_timeout(1500)  # let plotly finish drawing
    completed = page.get_by_test_id("stMetric").filter(has_text="Completed")
    assert int(completed.get_by_test_id("stMetricValue").inner_text().replace(",", "")) > 0
    heading.evaluate("h => h.scrollIntoView({block: 'start'})")
    page.mouse.move(5, 5)  # no hover toolbar over a chart's title
    page.wait_for_timeout(500)
    shot("serve-load-done")

    main.get_by_role("button", name="Stop server").click()
    expect(page.get_by_text(re.compile(r"exited with code 0"))).to_be_visible(timeout=60_000)
    expect(main.get_by_role("button", name="Start server")).to_be_visible()


def serve_mini_llama(page: Page, app_url: str, request) -> None:
    """Open the Serve page and start a server for mini-llama alone from it."""
    page.goto(f"{app_url}/serve")
    expect(page.get_by_role("heading", name="Serve", exact=True)).to_be_visible(timeout=60_000)
    page.get_by_test_id("stMultiSelect").get_by_role("combobox").click()
    for _ in range(2):  # the two default models off, mini-llama on
        page.keyboard.press("Backspace")
    page.keyboard.type("mini-llama")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.wait_for_timeout(800)
    start_server(page, "mini-llama", request)


def test_serve_mini_llama_and_chat_with_it(page: Page, app_url, shot, request):
    serve_mini_llama(page, app_url, request)
    main = page.get_by_test_id("stMain")
    expect(main.get_by_text("Chat", exact=True)).to_be_visible()
    main.get_by_role("button", name="Send request").click()
    said = page.get_by_test_id("stChatMessage")
    expect(said).to_have_count(2, timeout=60_000)
    expect(said.first).to_contain_text("What does the zip function do?")
    assert said.nth(1).inner_text().strip()  # the assistant answered something
    expect(
        page.get_by_text(re.compile(r"\d+ prompt tokens · \d+ completion tokens"))
    ).to_be_visible()
    page.wait_for_timeout(1000)
    shot("serve-llm-chat")

    main.get_by_role("button", name="Stop server").click()
    expect(page.get_by_text(re.compile(r"exited with code 0"))).to_be_visible(timeout=60_000)


def test_a_load_test_streams_a_poisson_workload_to_mini_llama(page: Page, app_url, shot, request):
    serve_mini_llama(page, app_url, request)
    main = page.get_by_test_id("stMain")
    for label, value in (("Requests", "8"), ("Output tokens (min)", "8")):
        box = main.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        page.wait_for_timeout(600)
    main.get_by_text("Poisson rate", exact=True).click()
    rate = main.get_by_label("Rate (requests/s)")
    expect(rate).to_be_visible()
    rate.fill("8")
    rate.press("Enter")
    page.wait_for_timeout(800)
    main.get_by_role("button", name="Run load test").click()
    line = re.compile(r"mini-llama, open loop, Poisson 8 req/s: 8/8 streams done")
    expect(page.get_by_text(line)).to_be_visible(timeout=120_000)
    expect(main.locator(".js-plotly-plot")).to_have_count(1, timeout=30_000)
    done = page.get_by_test_id("stMetric").filter(has_text="Streams done")
    assert done.get_by_test_id("stMetricValue").inner_text() == "8/8"
    expect(main.get_by_test_id("stTable")).to_contain_text("TTFT")
    page.wait_for_timeout(1500)  # let plotly finish drawing
    heading = page.get_by_role("heading", name="Load test")
    heading.evaluate("h => h.scrollIntoView({block: 'start'})")
    page.mouse.move(5, 5)
    page.wait_for_timeout(500)
    shot("serve-llm-load")

    main.get_by_role("button", name="Stop server").click()
    expect(page.get_by_text(re.compile(r"exited with code 0"))).to_be_visible(timeout=60_000)
