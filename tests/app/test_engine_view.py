"""The Serve page's Engine view through AppTest: each switch runs a preset to its end, and the
numbers and figures it shows are the run's own."""

from __future__ import annotations

import pytest
from apptest_helpers import has_button, until

from maaslab.llm import demo

KEY = "serve.engine"
DONE = f"{KEY}.done"


@pytest.fixture(autouse=True)
def no_shipped_models(tmp_path, monkeypatch):
    """The view's model comes from each test, not from whatever assets/models holds."""
    monkeypatch.setattr(demo, "MODEL_FOLDER", tmp_path / "absent" / "mini-llama")
    monkeypatch.setattr(demo, "DRAFT_FOLDER", tmp_path / "absent" / "mini-llama-draft")


def engine_view(open_page):
    """The Serve page with its Engine tab open."""
    at = open_page("serve")
    at.session_state["serve.view"] = "Engine"
    return at.run()


def run_to_end(at):
    """Press Run and poll until the result is kept; the result."""
    at.button(key=f"{KEY}.run").click().run()
    assert not at.error, [e.value for e in at.error]
    until(at, lambda a: DONE in a.session_state, timeout=120, what="the run", poll_s=0.3)
    return at.session_state[DONE]


def metrics(at) -> dict[str, str]:
    """The tiles shown: label -> value."""
    return {m.label: m.value for m in at.metric}


def test_the_engine_tab_offers_workloads_and_switches_and_says_why_speculation_is_off(
    open_page, page_text
):
    at = engine_view(open_page)
    assert all(b.key != "serve.start" for b in at.button)  # the Server tab's widgets do not run
    text = page_text(at)
    assert "mini-llama is not built yet, so this is a random Llama (seed 0" in text
    assert at.segmented_control(key=f"{KEY}.preset").value == "chat"
    assert at.toggle(key=f"{KEY}.continuous").value and at.toggle(key=f"{KEY}.prefix").value
    spec = at.toggle(key=f"{KEY}.speculative")
    assert spec.disabled and not spec.value
    assert "Speculative decoding needs a draft model trained with mini-llama." in text
    assert at.slider(key=f"{KEY}.requests").value == 6  # fast mode
    assert at.select_slider(key=f"{KEY}.blocks.chat").value == 24


def test_each_switch_runs_the_shared_prompt_to_its_end_and_shows_its_numbers(open_page, page_text):
    at = engine_view(open_page)
    at.segmented_control(key=f"{KEY}.preset").set_value("shared system prompt").run()
    runs = {}
    for name, toggles in [
        ("all on", {}),
        ("static batching", {"continuous": False}),
        ("no prefix caching", {"continuous": True, "prefix": False}),
    ]:
        for key, value in toggles.items():
            at.toggle(key=f"{KEY}.{key}").set_value(value).run()
        result = run_to_end(at)
        s = result.stats
        shown = metrics(at)
        assert shown["Steps"] == str(s.steps) and s.steps > 0 and not result.stopped
        assert shown["Preemptions"] == str(s.preemptions)
        assert shown["Prefix-cache hits"] == str(s.blocks.prefix_hits)
        assert shown["Tokens out"] == str(s.generated_tokens)
        assert shown["Running / waiting"] == "0 / 0"
        assert len(at.get("plotly_chart")) == 3  # timeline, block map, TTFT/ITL
        assert at.success[0].value == result.line()
        on = {True: "on", False: "off"}
        assert (
            f"continuous batching {on[toggles.get('continuous', True)]} · prefix caching "
            f"{on[toggles.get('prefix', True)]} · speculative decoding off"
        ) in page_text(at)
        runs[name] = s
    assert runs["all on"].blocks.prefix_hits > 0 == runs["no prefix caching"].blocks.prefix_hits
    assert runs["static batching"].steps > runs["all on"].steps
    assert runs["no prefix caching"].steps > runs["all on"].steps


@pytest.fixture
def with_a_draft(tmp_path, monkeypatch):
    """A model folder and a draft folder (the same tiny Llama: every guess is right)."""
    model = demo.tiny_llama(0)
    model.hf.save_pretrained(tmp_path / "mini-llama")
    model.hf.save_pretrained(tmp_path / "mini-llama-draft")
    monkeypatch.setattr(demo, "MODEL_FOLDER", tmp_path / "mini-llama")
    monkeypatch.setattr(demo, "DRAFT_FOLDER", tmp_path / "mini-llama-draft")


def test_speculative_decoding_with_a_draft_shows_its_acceptance(open_page, page_text, with_a_draft):
    at = engine_view(open_page)
    assert "mini-llama: 2 layers, 512-token context. Draft: mini-llama-draft." in page_text(at)
    spec = at.toggle(key=f"{KEY}.speculative")
    assert not spec.disabled
    spec.set_value(True).run()
    result = run_to_end(at)
    assert result.stats.draft_checks > 0 and metrics(at)["Guesses accepted"] == "100%"
    assert "speculative decoding on" in page_text(at) and "of guesses accepted" in result.line()


def test_a_pool_too_small_for_a_request_is_refused_with_what_to_do(open_page):
    at = engine_view(open_page)
    at.segmented_control(key=f"{KEY}.preset").set_value("shared system prompt").run()
    at.select_slider(key=f"{KEY}.blocks.shared system prompt").set_value(8).run()
    at.button(key=f"{KEY}.run").click().run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert error.startswith("Cannot run this: the longest request") and "at least" in error
    assert DONE not in at.session_state and not at.get("plotly_chart")


def test_stop_ends_a_slow_run_and_keeps_what_it_did(open_page):
    at = engine_view(open_page)
    at.toggle(key=f"{KEY}.slow").set_value(True).run()
    at.button(key=f"{KEY}.run").click().run()
    until(
        at,
        lambda a: has_button(a, f"{KEY}.stop"),
        timeout=120,
        what="the live view",
        poll_s=0.3,
    )
    at.button(key=f"{KEY}.stop").click().run()
    until(at, lambda a: DONE in a.session_state, timeout=30, what="the run", poll_s=0.3)
    result = at.session_state[DONE]
    assert result.stopped and result.line().endswith("· stopped")
    assert int(metrics(at)["Steps"]) == result.stats.steps < 60
