"""Helpers the page tests share: rerun a page until something holds, and look at processes and
buttons (imported by the tests; the fixtures live in conftest.py)."""

import os
import time

from streamlit.testing.v1 import AppTest


def until(
    at: AppTest, done, timeout: float = 60.0, what: str = "the page", poll_s: float = 0.5
) -> AppTest:
    """Rerun every `poll_s` seconds (as a page's poll would) until done(at) holds; a page
    exception or the deadline fails the test, saying `what` did not happen."""
    deadline = time.time() + timeout
    while not done(at):
        assert time.time() < deadline, f"{what} did not happen within {timeout:g} s"
        assert not at.exception, at.exception
        time.sleep(poll_s)
        at.run()
    assert not at.exception, at.exception
    return at


def alive(pid: int) -> bool:
    """True while a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def has_button(at: AppTest, key: str) -> bool:
    """True when the page shows the button with this key."""
    return any(b.key == key for b in at.button)
