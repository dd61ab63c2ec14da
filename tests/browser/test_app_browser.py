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


def _points(page: Page, title: str) -> int:
    # Markers on the chart with this title; 0 while Streamlit swaps the chart for a redraw.
    charts = page.locator(".js-plotly-plot").filter(has_text=title)
    return max((c.locator("path.point").count() for c in charts.all()), default=0)


def _wait_for_points(page: Page, title: str, more_than: int, timeout: float = 20) -> int:
    deadline = time.time() + timeout
    while (count := _points(page, title)) <= more_than and time.time() < deadline:
        time.sleep(0.25)
    return count


def _wait_for_epoch(page: Page, epoch: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while (status := _status(page))[1] < epoch:
        assert status[0] == "training", f"{status} before epoch {epoch}; page at {page.url}"
        assert time.time() < deadline, f"still {status} after {timeout} s; page at {page.url}"
        time.sleep(0.25)


def test_training_studio_loss_curve_and_boundary_move_then_stop(page: Page, app_url, shot):
    # The slowest pace (0.5 s an epoch: 100 s for the 200 epochs) so that the run is still going
    # when Stop is clicked, however slowly a loaded machine draws the charts before that. The
    # link sets it (as a teacher's link would), so no key press lands on a re-drawn widget.
    page.goto(f"{app_url}/training_studio?pace=0.5")
    expect(page.get_by_role("heading", name="Training Studio")).to_be_visible(timeout=30_000)
    expect(page.get_by_label("Epochs")).to_have_value("200")
    page.get_by_role("button", name="Train").click()
    expect(page.get_by_text("Status: training")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(re.compile(r"epoch \d+/200"))).to_be_visible()
    expect(page.get_by_text("Decision boundary").first).to_be_visible(timeout=30_000)

    _wait_for_epoch(page, 3)
    _, first = _status(page)
    points_before = _wait_for_points(page, "Loss", 0)
    time.sleep(2.0)
    state, second = _status(page)
    assert state == "training" and second > first >= 3
    assert _wait_for_points(page, "Loss", points_before) > points_before > 0
    assert "dataset=moons" in page.url and "epochs=200" in page.url  # the link keeps the settings
    shot("studio-training")

    page.get_by_test_id("stMain").get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Status: stopped")).to_be_visible(timeout=30_000)
    _, stopped_at = _status(page)
    time.sleep(1.5)
    assert _status(page) == ("stopped", stopped_at)  # it really stopped
    assert stopped_at < 200
    expect(page.get_by_role("button", name="Save model")).to_be_visible()
    shot("studio-stopped")


def test_training_studio_digits_accuracy_grows_then_stop(page: Page, app_url, shot):
    page.goto(f"{app_url}/training_studio?epochs=300&pace=0.2")
    expect(page.get_by_role("heading", name="Training Studio")).to_be_visible(timeout=30_000)
    page.get_by_test_id("stSelectbox").filter(has_text="Dataset").click()
    page.get_by_role("option", name="digits").click()
    expect(page).to_have_url(re.compile(r"dataset=digits"), timeout=20_000)
    page.get_by_role("button", name="Train").click()
    expect(page.get_by_text("Status: training")).to_be_visible(timeout=30_000)

    _wait_for_epoch(page, 2)
    accuracy_points = _wait_for_points(page, "Accuracy", 0)
    time.sleep(2.5)
    state, epoch = _status(page)
    assert state == "training" and epoch > 2
    assert _wait_for_points(page, "Accuracy", accuracy_points) > accuracy_points > 0
    expect(page.get_by_text("Decision boundary")).to_have_count(0)  # not for 64-D digits
    shot("studio-digits")
    page.get_by_test_id("stMain").get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Status: stopped")).to_be_visible(timeout=30_000)
    assert _status(page)[1] < 300
