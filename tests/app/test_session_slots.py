"""The per-session slot registry (app/components.session_slot): a session gets its own slot
back on every rerun; the slots of sessions that have gone are stopped on a thread of their own,
and a slot whose stop fails never breaks the session that noticed it."""

import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "app"))
import components  # the app's folder is on the path only while a page runs


class Slot:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()
        if self.fail:
            raise RuntimeError("this slot cannot stop cleanly")


@pytest.fixture
def sessions(monkeypatch):
    """A fake runtime: `active` holds the ids of the sessions still connected; `me` is the id
    of the session whose script is running."""
    state = SimpleNamespace(active={"a", "b"}, me="a")
    runtime = SimpleNamespace(is_active_session=lambda sid: sid in state.active)
    from streamlit.runtime import Runtime

    monkeypatch.setattr(Runtime, "exists", staticmethod(lambda: True))
    monkeypatch.setattr(Runtime, "instance", staticmethod(lambda: runtime))
    monkeypatch.setattr(
        components, "get_script_run_ctx", lambda: SimpleNamespace(session_id=state.me)
    )
    registry = components._Registry()
    monkeypatch.setattr(components, "_registry", lambda: registry)
    return state


def test_a_session_gets_its_own_slot_back(sessions):
    mine = components.session_slot("page", Slot)
    assert components.session_slot("page", Slot) is mine
    assert components.session_slot("other", Slot) is not mine
    sessions.me = "b"
    assert components.session_slot("page", Slot) is not mine


def test_gone_sessions_are_stopped_and_a_failing_stop_is_logged_not_raised(sessions, caplog):
    sessions.me = "b"
    failing = components.session_slot("page", lambda: Slot(fail=True))
    sessions.me = "a"
    mine = components.session_slot("page", Slot)
    sessions.active = {"a"}  # b's tab closed
    assert components.session_slot("page", Slot) is mine  # no exception here
    assert failing.stopped.wait(10), "the gone session's slot was not stopped"
    for thread in threading.enumerate():
        if thread.name == "stop-gone-slots":
            thread.join(10)
    assert "stopping the slot of a closed session failed" in caplog.text
    assert not mine.stopped.is_set()
    sessions.me = "b"  # a session that comes back gets a new slot, not the stopped one
    assert components.session_slot("page", Slot) is not failing
