"""Clicks a person makes, in Debian Chromium: Home lists lessons; the Studio trains and stops."""

import re
import time

import pytest
from playwright.sync_api import Page, expect

from maaslab.lessons import load_lessons

pytestmark = pytest.mark.browser
STATUS = re.compile(r"Status: (\w+)\S* · epoch (\d+)/(\d+)")


def _status(page: Page) -> tuple[str, int]:
    text = page.locator('[data-testid="stMarkdownContainer"]', has_text="Status:").inner_text()
    match = STATUS.search(text)
    assert match, text
    return match.group(1), int(match.group(2))


def test_home_renders_the_lesson_list(page: Page, app_url, shot):
    page.goto(app_url)
    expect(page.get_by_role("heading", name="MaaS Lab").first).to_be_visible(timeout=30_000)
    for lesson in load_lessons():
        expect(page.get_by_text(f"{lesson.number:02d} · {lesson.title}")).to_be_visible()
        expect(page.get_by_text(f"jupyter lab {lesson.notebook}")).to_be_visible()
    expect(page.get_by_text("Device: cpu").or_(page.get_by_text("Device: cuda"))).to_be_visible()
    shot("home")
    page.get_by_role("link", name="Read the guide").first.click()
    expect(page.get_by_text("Exercises").first).to_be_visible(timeout=20_000)
    assert "lesson=00_tour" in page.url


def test_training_studio_curve_moves_and_stop_works(page: Page, app_url, shot):
    page.goto(app_url)
    page.get_by_role("link", name="Training Studio").first.click()
    expect(page.get_by_role("heading", name="Training Studio")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Train").click()
    expect(page.get_by_text("Status: training")).to_be_visible(timeout=30_000)

    # the curve moves: the epoch count and the number of points on the loss chart both grow
    deadline = time.time() + 30
    while _status(page)[1] < 3 and time.time() < deadline:
        time.sleep(0.25)
    _, first = _status(page)
    points_before = page.locator(".js-plotly-plot").first.locator("path.point").count()
    time.sleep(2.0)
    state, second = _status(page)
    points_after = page.locator(".js-plotly-plot").first.locator("path.point").count()
    assert state == "training" and second > first >= 3
    assert points_after > points_before > 0
    shot("studio-training")

    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Status: stopped")).to_be_visible(timeout=30_000)
    _, stopped_at = _status(page)
    time.sleep(1.5)
    assert _status(page) == ("stopped", stopped_at)  # it really stopped
    assert stopped_at < 200
    expect(page.get_by_role("button", name="Save model")).to_be_visible()
    shot("studio-stopped")
