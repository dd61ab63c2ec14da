"""The Serve page's Service view through AppTest: one classroom service started from the page,
students' traffic, the tenants table, and version 2 of digits rolled out, promoted and rolled
back; a refusal of the server shown as an error; Stop removes the demo's files."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from apptest_helpers import alive, has_button, until
from streamlit.testing.v1 import AppTest

from maaslab.serve.service_client import ServiceClient

KEY = "serve.service"
APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")


def service_tab() -> AppTest:
    """The Serve page with its Service tab open."""
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page("views/serve.py").run()
    at.session_state["serve.view"] = "Service"
    return at.run()


def tenants(at) -> dict[str, dict]:
    """The tenants table: tenant -> its row."""
    table = next(d.value for d in at.dataframe if "tenant" in d.value.columns)
    return {row["tenant"]: row for row in table.to_dict("records")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder of this module's own (the demo's files go under it)."""
    folder = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAASLAB_RUNS", str(folder))
        yield folder


@pytest.fixture(scope="module")
def service(request, runs):
    """(page, pid, teacher client): a service for 2 students limited to 10 requests/s."""
    at = service_tab()
    at.number_input(key=f"{KEY}.students").set_value(2).run()
    at.number_input(key=f"{KEY}.rate_limit").set_value(10.0).run()
    at.button(key=f"{KEY}.start").click().run()
    until(at, lambda a: has_button(a, f"{KEY}.stop") or a.error, what="the service start")
    assert not at.error, at.error[0].value
    shown = next(s.value for s in at.success if "Serving" in s.value)
    pid = int(re.search(r"pid (\d+)", shown).group(1))
    request.addfinalizer(lambda: alive(pid) and os.kill(pid, signal.SIGTERM))
    url = re.search(r"`(http://127\.0\.0\.1:\d+)`", shown).group(1)
    handout = at.dataframe[0].value
    key = handout.set_index("name").loc["teacher", "key"]
    teacher = ServiceClient(url, key)
    request.addfinalizer(teacher.close)
    return at, pid, teacher


def test_the_tab_offers_a_start_form_and_runs_alone(runs, page_text):
    at = service_tab()
    assert not has_button(at, "serve.start")  # the Server tab's widgets do not run
    assert has_button(at, f"{KEY}.start") and not has_button(at, f"{KEY}.stop")
    assert at.number_input(key=f"{KEY}.students").value == 3
    assert at.number_input(key=f"{KEY}.rate_limit").value == 20.0
    assert "A classroom shares one model server" in page_text(at)


def test_start_serves_the_repository_with_a_key_each(service, runs, page_text):
    at, pid, teacher = service
    assert alive(pid)
    text = page_text(at)
    assert re.search(r"Serving \*\*the repository .*classroom-.*repository\*\* at", text)
    handout = at.dataframe[0].value
    assert list(handout["name"]) == ["teacher", "student-01", "student-02"]
    assert list(handout["role"]) == ["admin", "user", "user"]
    assert all(k.startswith("mls_") for k in handout["key"])
    (folder,) = (runs / "service").iterdir()  # the demo's files, under the runs folder
    assert (folder / "keys.json").is_file() and (folder / "students.csv").is_file()
    rows = tenants(at)
    assert list(rows) == ["teacher", "student-01", "student-02"]
    assert rows["student-01"]["limits"] == "10/s (burst 20) · 5000/day · 20000 tok/min"
    assert rows["teacher"]["limits"] == "no limit"
    assert at.button(key=f"{KEY}.promote").disabled
    assert at.button(key=f"{KEY}.rollback").disabled
    assert at.slider(key=f"{KEY}.canary").disabled
    assert "No challenger: publish version 2 first." in text
    assert teacher.rollout("digits")["versions"] == ["1"]


def test_publish_then_a_canary_share_and_shadow_copies(service, page_text):
    at, _, teacher = service
    at.button(key=f"{KEY}.publish").click().run()
    assert not at.error, [e.value for e in at.error]
    state = teacher.rollout("digits")
    assert (state["versions"], state["challenger"], state["canary_percent"]) == (["1", "2"], "2", 0)
    assert at.button(key=f"{KEY}.publish").disabled
    assert not at.button(key=f"{KEY}.promote").disabled
    at.slider(key=f"{KEY}.canary").set_value(30.0).run()
    at.toggle(key=f"{KEY}.shadow").set_value(True).run()
    assert not at.error, [e.value for e in at.error]
    state = teacher.rollout("digits")
    assert (state["canary_percent"], state["shadow"]) == (30.0, True)
    assert at.slider(key=f"{KEY}.canary").value == 30.0


def test_a_flood_is_refused_while_steady_traffic_is_answered(service):
    at, _, teacher = service
    at.multiselect(key=f"{KEY}.steady").set_value(["student-01"]).run()
    at.selectbox(key=f"{KEY}.flood").set_value("student-02").run()
    try:
        until(
            at,
            lambda a: (
                tenants(a)["student-01"]["answered"] >= 10
                and tenants(a)["student-02"]["429 rate"] >= 50
            ),
            what="steady answers and a flood's refusals",
        )
        rows = tenants(at)
        assert rows["student-01"]["429 rate"] == 0  # 5 requests/s fit under the limit
        assert rows["student-01"]["sending"] == "steady 5/s"
        assert rows["student-02"]["sending"] == "flood 200/s"
        assert rows["student-01"]["p50 ms"] > 0
        state = teacher.rollout("digits")
        assert state["requests"]["2"] > 0  # the canary's share reached version 2
        assert state["shadow_stats"]["compared"] + state["shadow_stats"]["skipped"] > 0
    finally:
        at.multiselect(key=f"{KEY}.steady").set_value([]).run()
        at.selectbox(key=f"{KEY}.flood").set_value(None).run()
    assert tenants(at)["student-01"]["sending"] == ""  # its load stopped


def test_promote_then_roll_back(service, page_text):
    at, _, teacher = service
    at.button(key=f"{KEY}.promote").click().run()
    assert not at.error, [e.value for e in at.error]
    state = teacher.rollout("digits")
    assert (state["champion"], state["challenger"], state["history"]) == ("2", None, ["1"])
    assert at.slider(key=f"{KEY}.canary").value == 0.0 and at.slider(key=f"{KEY}.canary").disabled
    assert at.button(key=f"{KEY}.promote").disabled
    assert "v1 returns as champion; v2 stays as challenger." in page_text(at)
    at.button(key=f"{KEY}.rollback").click().run()
    assert not at.error, [e.value for e in at.error]
    state = teacher.rollout("digits")
    assert (state["champion"], state["challenger"], state["history"]) == ("1", "2", [])
    assert at.button(key=f"{KEY}.rollback").disabled


def test_a_refusal_of_the_server_is_an_error_not_a_traceback(service):
    at, _, teacher = service
    teacher.promote("digits")  # another admin acts: the page's Promote is now out of date
    at.button(key=f"{KEY}.promote").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "POST /v2/models/digits/promote: 400 model 'digits' has no challenger to promote: set "
        "one with set_traffic"
    ]
    assert at.button(key=f"{KEY}.promote").disabled  # redrawn from the server's state
    at.button(key=f"{KEY}.rollback").click().run()
    assert not at.error


def test_stop_ends_the_server_and_removes_the_files(service, runs, page_text):
    at, pid, _ = service
    at.button(key=f"{KEY}.stop").click().run()
    assert not at.exception, at.exception
    assert "Server stopped (SIGTERM; it drained and exited with code 0)." in page_text(at)
    assert not alive(pid)
    assert list((runs / "service").iterdir()) == []
    assert has_button(at, f"{KEY}.start")
