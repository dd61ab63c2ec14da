"""Serve page in Chromium on Ray Serve: a person picks Ray Serve with two replicas of
digits-cnn, starts it, sees the nodes and replicas live, calls the model, kills a replica,
stops it: no process of that Ray session is left."""

import contextlib
import os
import re
import signal
import time

import pytest
from playwright.sync_api import Page, expect

from maaslab.scale import ray_status

pytestmark = pytest.mark.browser


def test_pick_ray_serve_see_the_replicas_call_and_stop(page: Page, app_url, shot, request):
    page.goto(f"{app_url}/serve")
    main = page.get_by_test_id("stMain")
    expect(page.get_by_role("heading", name="Serve", exact=True)).to_be_visible(timeout=60_000)
    page.get_by_test_id("stMultiSelect").get_by_role("combobox").click()
    for _ in range(2):  # the two default models off, digits-cnn alone on
        page.keyboard.press("Backspace")
    page.keyboard.type("digits-cnn")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.wait_for_timeout(800)
    main.get_by_text("Ray Serve", exact=True).click()
    replicas = main.get_by_label("Replicas per model")
    expect(replicas).to_have_value("2")
    page.wait_for_timeout(500)
    shot("serve-ray-form")

    main.get_by_role("button", name="Start server").click()
    expect(page.get_by_text(re.compile(r"Starting the server on Ray Serve"))).to_be_visible(
        timeout=30_000
    )
    serving = page.get_by_text(re.compile(r"Serving digits-cnn at .*Ray Serve, 2 replicas"))
    expect(serving).to_be_visible(timeout=300_000)
    pid = int(re.search(r"pid (\d+)", serving.inner_text()).group(1))

    def kill() -> None:  # a failed step must not leave Ray running
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    request.addfinalizer(kill)
    heading = page.get_by_role("heading", name="Ray: nodes and replicas")
    expect(heading).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Replicas: 3 running (the ingress answers the routes).")).to_be_visible(
        timeout=60_000
    )
    tables = main.get_by_test_id("stTable")
    expect(tables.filter(has_text="head")).to_contain_text("ALIVE")
    replica_table = tables.filter(has_text="deployment")
    expect(replica_table.get_by_text("digits-cnn", exact=True)).to_have_count(2)
    heading.evaluate("h => h.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(1600)  # one more refresh of the tables
    shot("serve-ray-replicas")

    main.get_by_role("button", name="Send request").click()
    expect(page.get_by_text(re.compile(r"Prediction: \d \(label \d\)"))).to_be_visible(
        timeout=60_000
    )
    page.get_by_role("heading", name="Send a request").evaluate(
        "h => h.scrollIntoView({block: 'start'})"
    )
    page.wait_for_timeout(1000)
    shot("serve-ray-call")

    main.get_by_role("button", name="Kill one replica").click()  # lesson 17's fault
    killed = page.get_by_text(re.compile(r"Killed replica \S+ of digits-cnn \(pid \d+\)"))
    expect(killed).to_be_visible(timeout=30_000)
    heading.evaluate("h => h.scrollIntoView({block: 'start'})")
    expect(replica_table).to_contain_text("DEAD", timeout=30_000)  # the tables' next refresh
    shot("serve-ray-killed")

    session = ray_status.session_dir(pid)
    assert session is not None
    main.get_by_role("button", name="Stop server").click()
    expect(page.get_by_text(re.compile(r"exited with code 0"))).to_be_visible(timeout=150_000)
    expect(main.get_by_role("button", name="Start server")).to_be_visible()
    deadline = time.monotonic() + 20  # workers end as their raylet goes
    while ray_status.session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_status.session_processes(session) == []
