"""The Serve page's Service tab in Chromium: start the classroom service, send a student's steady
load and another's flood, publish version 2 of digits, move the canary, shadow, promote, roll
back, stop."""

import contextlib
import os
import re
import signal

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser
WAIT = 30_000  # ms for a step the page answers at its next rerun (slower on a busy machine)


def pick(page: Page, label: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `label`."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    box.get_by_role("combobox").click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_timeout(800)


def scroll_to(page: Page, heading: str) -> None:
    """Bring the heading to the top of the window, the mouse off the charts."""
    page.get_by_role("heading", name=heading).evaluate("h => h.scrollIntoView({block: 'start'})")
    page.mouse.move(5, 5)
    page.wait_for_timeout(500)


def test_a_classroom_service_from_start_to_roll_back(page: Page, app_url, shot, request):
    page.goto(f"{app_url}/serve")
    main = page.get_by_test_id("stMain")
    expect(page.get_by_role("heading", name="Serve", exact=True)).to_be_visible(timeout=60_000)
    page.get_by_role("tab", name="Service").click()
    main.get_by_role("button", name="Start the classroom service").click()
    serving = page.get_by_text(re.compile(r"Serving the repository .* at"))
    expect(serving).to_be_visible(timeout=120_000)
    pid = int(re.search(r"pid (\d+)", serving.inner_text()).group(1))

    def kill() -> None:  # a failed step must not leave the server running
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    request.addfinalizer(kill)
    main.get_by_text(re.compile(r"Handout: 4 keys")).click()
    expect(main.get_by_role("button", name="Download the handout (CSV)")).to_be_visible(
        timeout=WAIT
    )
    page.wait_for_timeout(1000)
    shot("service-started")

    steady = page.get_by_test_id("stMultiSelect").filter(has_text="Steady load from")
    steady.get_by_role("combobox").click()
    page.get_by_role("option", name="student-01", exact=True).click()
    page.get_by_role("option", name="student-03", exact=True).click()
    page.keyboard.press("Escape")
    page.wait_for_timeout(800)
    pick(page, "Flood from", "student-02")
    tenants = main.get_by_test_id("stDataFrame").filter(has_text="429 rate")
    expect(tenants).to_contain_text("flood 200/s", timeout=WAIT)
    expect(tenants).to_contain_text("steady 5/s", timeout=WAIT)
    page.wait_for_timeout(5000)  # a few seconds of traffic
    scroll_to(page, "Tenants")
    shot("service-tenants")

    main.get_by_role("button", name="Publish version 2 (digits-cnn)").click()
    expect(main.get_by_text("Published: versions 1, 2 are loaded.")).to_be_visible(timeout=WAIT)
    canary = page.get_by_test_id("stSlider").filter(has_text="Canary")
    thumb = canary.get_by_role("slider")
    for _ in range(6):  # 5 % a step: 30 %
        thumb.press("ArrowRight")
    page.wait_for_timeout(1500)
    expect(thumb).to_have_value("30", timeout=WAIT)
    main.get_by_text("Shadow copies to the challenger").click()
    title = re.compile(r"challenger v2 gets 30 % of the traffic, shadow on")
    expect(main.locator(".js-plotly-plot").filter(has_text=title)).to_be_visible(timeout=WAIT)
    page.wait_for_timeout(4000)  # canary answers and shadow comparisons come in
    scroll_to(page, "Rollout of digits")
    shot("service-canary")

    main.get_by_role("button", name="Promote the challenger").click()
    expect(main.get_by_text("v1 returns as champion; v2 stays as challenger.")).to_be_visible(
        timeout=WAIT
    )
    expect(main.get_by_role("button", name="Promote the challenger")).to_be_disabled(timeout=WAIT)
    main.get_by_role("button", name="Roll back").click()
    expect(main.get_by_text("Nothing to roll back: no promote to undo.")).to_be_visible(
        timeout=WAIT
    )
    expect(thumb).to_have_value("0", timeout=WAIT)
    expect(main.get_by_test_id("stAlert").filter(has_text="400")).to_have_count(0)
    page.wait_for_timeout(1500)
    scroll_to(page, "Rollout of digits")
    shot("service-rolled-back")

    main.get_by_role("button", name="Stop the service").click()
    expect(page.get_by_text(re.compile(r"exited with code 0"))).to_be_visible(timeout=60_000)
    expect(main.get_by_role("button", name="Start the classroom service")).to_be_visible(
        timeout=WAIT
    )
