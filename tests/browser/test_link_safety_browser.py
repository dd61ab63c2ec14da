"""Crafted links in Chromium: what a link carries is shown as text. No link to it, no image from
it, no request to it; the warning says what was ignored and the page's controls are all there."""

from urllib.parse import urlencode, urlsplit

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser
CRAFTED = [
    "[click here](https://example.com)",
    "![x](http://127.0.0.1:9/x.png)",
    "<img src=x onerror=alert(1)>",
    ":red[x]",
    "$x$",
]
FORBIDDEN = ("example.com", "127.0.0.1:9")  # hosts the crafted links point at


def _watch(page: Page) -> tuple[list[str], list[str]]:
    """Every URL the page requests, and every dialog it opens (alert(1) would be one)."""
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    return requests, dialogs


def _assert_shown_as_text(page: Page, values: list[str], requests: list[str], dialogs: list[str]):
    warning = page.get_by_test_id("stAlert").filter(has_text="Some settings in this link")
    expect(warning).to_be_visible(timeout=30_000)
    for value in values:
        expect(warning).to_contain_text(value)  # every character as it was written
    text = warning.get_by_test_id("stMarkdownContainer")
    for markup in ("a", "img", "span[role=img]", ".katex", ".stMarkdownColoredText"):
        expect(text.locator(markup)).to_have_count(0)
    main = page.get_by_test_id("stMain")
    for host in FORBIDDEN:
        expect(main.locator(f'a[href*="{host}"]')).to_have_count(0)
        expect(main.locator(f'img[src*="{host}"]')).to_have_count(0)
    expect(main.locator('img[src="x"]')).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.wait_for_timeout(1000)  # an image or a prefetch would have been requested by now
    assert not [url for url in requests if urlsplit(url).netloc.endswith(FORBIDDEN)], requests
    assert dialogs == []


@pytest.mark.parametrize("index", range(len(CRAFTED)))
def test_a_crafted_lesson_link(page: Page, app_url, shot, index):
    requests, dialogs = _watch(page)
    page.goto(f"{app_url}/guide?{urlencode({'lesson': CRAFTED[index]})}")
    _assert_shown_as_text(page, [CRAFTED[index]], requests, dialogs)
    expect(page.get_by_role("combobox", name="Lesson")).to_be_visible()
    expect(page.get_by_role("heading", name="A tour of MaaS Lab")).to_be_visible()
    shot(f"crafted-guide-{index}")


def test_a_crafted_gradient_descent_lab_link(page: Page, app_url, shot):
    requests, dialogs = _watch(page)
    fields = ("surface", "opt", "lr", "start", "steps")
    page.goto(
        f"{app_url}/gradient_descent_lab?{urlencode(dict(zip(fields, CRAFTED, strict=True)))}"
    )
    _assert_shown_as_text(page, CRAFTED, requests, dialogs)
    expect(page.get_by_role("combobox", name="Surface")).to_be_visible()
    expect(page.get_by_test_id("stTable")).to_contain_text("ran 500 steps", timeout=30_000)
    shot("crafted-gdlab")


def test_a_crafted_training_studio_link(page: Page, app_url, shot):
    requests, dialogs = _watch(page)
    fields = ("dataset", "activation", "optimizer", "lr", "width")
    page.goto(f"{app_url}/training_studio?{urlencode(dict(zip(fields, CRAFTED, strict=True)))}")
    _assert_shown_as_text(page, CRAFTED, requests, dialogs)
    train = page.get_by_test_id("stMain").get_by_role("button", name="Train")
    expect(train).to_be_enabled()
    expect(page.get_by_test_id("stNumberInput").filter(has_text="Seed")).to_be_visible()
    shot("crafted-studio")


def test_a_flood_of_text_in_a_link_is_cut_short(page: Page, app_url, shot):
    requests, dialogs = _watch(page)
    flood = CRAFTED[0] * 150  # 4,950 characters
    page.goto(f"{app_url}/training_studio?{urlencode({'dataset': flood, 'width': '100'})}")
    _assert_shown_as_text(
        page, ["ignored dataset='[click here]", "ignored width='100'"], *[requests, dialogs]
    )
    warning = page.get_by_test_id("stAlert").filter(has_text="Some settings in this link")
    assert len(warning.inner_text()) < 400
    expect(page.get_by_test_id("stMain").get_by_role("button", name="Train")).to_be_enabled()
    shot("crafted-studio-flood")
