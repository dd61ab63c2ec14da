"""The Serve page on Ray Serve through AppTest: choose Ray, start two replicas of digits-cnn,
see them running with their node and pid, call the model (the single-process numbers), stop:
no process of that Ray session is left. A bad choice starts nothing."""

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from apptest_helpers import alive, has_button, until
from streamlit.testing.v1 import AppTest

from maaslab.auto import load
from maaslab.data import load_dataset
from maaslab.scale import ray_status

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
STOP_S = 150.0  # Serve's controller may take 30 s to stop on a busy machine, then Ray


def choose_ray(at: AppTest, **numbers: int) -> AppTest:
    """Pick Ray Serve on the start form (digits-cnn only) and set the number inputs given."""
    at.multiselect(key="serve.models").set_value(["digits-cnn"]).run()
    at.radio(key="serve.engine").set_value("Ray Serve").run()
    if "auto_min" in numbers:
        at.radio(key="serve.ray_mode").set_value("Autoscale").run()
    for key, value in numbers.items():
        at.number_input(key=f"serve.{key}").set_value(value).run()
    return at


def test_autoscale_min_above_max_starts_nothing(open_page):
    at = choose_ray(open_page("serve"), auto_min=3, auto_max=2)
    at.button(key="serve.start").click().run()
    assert [e.value for e in at.error] == [
        "Min replicas (3) is above Max replicas (2): lower Min or raise Max."
    ]
    assert not has_button(at, "serve.stop") and not has_button(at, "serve.cancel")


@pytest.fixture(scope="module")
def ray_page(request):
    """The page with a Ray server it started (2 replicas of digits-cnn), and its pid."""
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page("views/serve.py").run()
    choose_ray(at, replicas=2)
    at.button(key="serve.start").click().run()
    until(at, lambda a: has_button(a, "serve.stop") or a.error, timeout=300, what="Ray's start")
    assert not at.error, at.error[0].value
    shown = next(s.value for s in at.success if "Serving" in s.value)
    pid = int(re.search(r"pid (\d+)", shown).group(1))

    def kill() -> None:  # a failing test must not leave Ray running
        if alive(pid):
            os.kill(pid, signal.SIGTERM)

    request.addfinalizer(kill)
    return at, pid


def replicas(at: AppTest) -> list[dict]:
    """The replica table's rows as the page shows them."""
    table = next(t for t in at.table if "replica" in t.value.columns)
    return table.value.to_dict("records")


def test_the_replica_table_shows_two_running_replicas(ray_page, page_text):
    at, pid = ray_page
    assert "Ray Serve, 2 replicas per model" in page_text(at)

    def both_up(a: AppTest) -> bool:
        rows = [r for r in replicas(a) if r["deployment"] == "digits-cnn"]
        return [r["state"] for r in rows] == ["ALIVE", "ALIVE"]

    until(at, both_up, timeout=60, what="two running digits-cnn replicas", poll_s=1.0)
    model = [r for r in replicas(at) if r["deployment"] == "digits-cnn"]
    nodes = next(t for t in at.table if "role" in t.value.columns).value
    assert list(nodes["role"]) == ["head"] and list(nodes["state"]) == ["ALIVE"]  # local Ray
    assert {r["node"] for r in model} == {nodes["node"][0]}
    assert {r["address"] for r in model} == {nodes["address"][0]}
    pids = [int(r["pid"]) for r in model]
    assert len(set(pids)) == 2 and all(alive(p) and p != pid for p in pids)
    assert any(r["deployment"] == "ingress" and r["state"] == "ALIVE" for r in replicas(at))
    assert "Replicas: 3 running (the ingress answers the routes)." in page_text(at)


def test_a_call_answers_as_the_single_process_server(ray_page, page_text):
    at, _ = ray_page
    at.slider(key="serve.digit").set_value(5).run()
    at.button(key="serve.send").click().run()
    assert not at.error, [e.value for e in at.error]
    data = load_dataset("digits", seed=0)
    expected = load("digits-cnn").predict(data.X_test[5:6] * 16).probabilities[0]
    assert f"**Prediction: {int(expected.argmax())}** (label {data.y_test[5]})" in page_text(at)
    call = at.session_state["serve.call"]["calls"][0]
    assert call.status == 200 and call.url.endswith("/v2/models/digits-cnn/infer")
    got = np.asarray(call.response["outputs"][0]["data"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_a_load_test_runs_against_the_replicas(ray_page, page_text):
    at, _ = ray_page
    at.selectbox(key="serve.load_model").set_value("digits-cnn").run()
    at.slider(key="serve.concurrency").set_value(4).run()
    at.slider(key="serve.duration").set_value(2).run()
    at.button(key="serve.start_load").click().run()
    until(at, lambda a: "serve.final" in a.session_state, timeout=60, what="the load test")
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    completed = int(metrics["Completed"].replace(",", ""))
    assert completed > 0 and metrics["Rejected (503)"] == "0"
    assert float(metrics["Throughput overall"].removesuffix("/s")) > 0
    assert at.session_state["serve.final"][2].ok == completed
    assert "digits-cnn c=4:" in page_text(at)


def test_kill_one_replica_ends_its_process(ray_page, page_text):
    at, _ = ray_page
    before = {int(r["pid"]) for r in replicas(at) if r["deployment"] == "digits-cnn"}
    at.selectbox(key="serve.ray_victim").set_value("digits-cnn").run()
    at.button(key="serve.ray_kill").click().run()
    killed = re.search(r"Killed replica \S+ of digits-cnn \(pid (\d+)\)", page_text(at))
    assert killed, page_text(at)
    pid = int(killed.group(1))
    assert pid in before
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:  # SIGKILL: gone once the kernel reaps it
        time.sleep(0.2)
    assert not alive(pid)


def test_stop_leaves_no_ray_process(ray_page):
    at, pid = ray_page
    session = ray_status.session_dir(pid)
    assert session is not None and ray_status.session_processes(session)  # Ray runs now
    at.button(key="serve.stop").click().run(timeout=STOP_S)
    assert not alive(pid)
    assert any("exited with code 0" in i.value for i in at.info), [i.value for i in at.info]
    deadline = time.monotonic() + 20  # workers end as their raylet goes
    while ray_status.session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_status.session_processes(session) == []
    assert has_button(at, "serve.start")
