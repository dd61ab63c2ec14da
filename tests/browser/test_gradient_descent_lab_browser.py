"""Gradient Descent Lab in Chromium: a shared link reopens a race; a click moves the start."""

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser
LINK = "surface=quadratic&opt=gd,adam&lr=gd:0.05,adam:0.3&start=-4.0,1.0&steps=100"


def _open(page: Page, app_url: str, query: str) -> None:
    # A shared link opens the page straight away, inside the router (sidebar and device line).
    page.goto(f"{app_url}/gradient_descent_lab?{query}")
    expect(page.get_by_role("heading", name="Gradient Descent Lab")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Device:")).to_be_visible()


def test_a_shared_link_reopens_the_race(page: Page, app_url, shot):
    _open(page, app_url, LINK)
    table = page.get_by_test_id("stTable")
    expect(table).to_contain_text("Adam (lr 0.3)", timeout=30_000)
    expect(table).to_contain_text("ran 100 steps")
    expect(table).to_contain_text(re.compile(r"GD \(lr 0\.05\).*diverged at step \d+", re.S))
    surface = page.get_by_role("combobox", name="Surface")
    expect(surface).to_have_value("Ill-conditioned quadratic")
    start_x = page.get_by_test_id("stSlider").filter(has_text="Start x")
    expect(start_x).to_contain_text("-4.00")
    race = page.locator(".js-plotly-plot").first
    expect(race.locator(".legendtext", has_text="Adam (lr 0.3)")).to_be_visible()
    expect(race.get_by_text("step 100")).to_be_visible()  # the animation slider, at the end
    expect(page.get_by_test_id("stAlert")).to_have_count(0)  # a clean link: no warnings
    assert "start=-4.0%2C1.0" in page.url and "steps=100" in page.url
    shot("gdlab-link")

    # a click on the map moves the start to the click target under the pointer, and the URL follows
    box = race.locator("rect.nsewdrag").first.bounding_box()  # the axes: x in [-6, 6], y in [-2, 2]
    spot = (box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.2)  # (2.4, 1.2), off path
    page.mouse.move(*spot)
    expect(race.locator(".hoverlayer")).to_contain_text("click: start here")
    page.mouse.click(*spot)
    expect(start_x).to_contain_text("2.40", timeout=30_000)
    expect(page.get_by_test_id("stSlider").filter(has_text="Start y")).to_contain_text("1.20")
    expect(page).to_have_url(re.compile(r"start=2\.4%2C1\.2"))
    shot("gdlab-clicked")

    # another page and back: the race is still the one just set up
    page.get_by_role("link", name="Training Studio").first.click()
    expect(page.get_by_role("heading", name="Training Studio")).to_be_visible(timeout=30_000)
    page.get_by_role("link", name="Gradient Descent Lab").first.click()
    expect(start_x).to_contain_text("2.40", timeout=30_000)
    expect(page).to_have_url(re.compile(r"surface=quadratic.*start=2\.4%2C1\.2"))


def test_a_link_with_nonsense_warns_and_still_races(page: Page, app_url, shot):
    _open(page, app_url, "surface=moon&lr=abc&steps=1e9&start=nan")
    alerts = page.get_by_test_id("stAlert")
    for bad in ("surface='moon'", "lr='abc'", "steps='1e9'", "start='nan'"):
        expect(alerts.filter(has_text=bad)).to_be_visible(timeout=30_000)
    # the warnings come first; the race and its table follow once the figure is built
    expect(page.get_by_test_id("stTable")).to_contain_text("ran 500 steps", timeout=30_000)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"surface=rosenbrock"))  # the URL now says what runs
    shot("gdlab-nonsense")
