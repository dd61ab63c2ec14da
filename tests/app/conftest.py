"""AppTest helpers shared by the page tests: open a page (with URL parameters), read its text."""

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")


def open_app(page: str | None = None, **query: str) -> AppTest:
    """Run the app (optionally switched to app/views/<page>.py) with query parameters set."""
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def app_text(at: AppTest) -> str:
    """Every piece of text the page shows, messages included, one per line."""
    parts = [
        *at.markdown,
        *at.caption,
        *at.title,
        *at.header,
        *at.subheader,
        *at.info,
        *at.warning,
        *at.error,
        *at.success,
    ]
    return "\n".join(str(p.value) for p in parts)


@pytest.fixture
def open_page() -> Callable[..., AppTest]:
    """open_page("training_studio", lr="0.1") -> a run AppTest on that page."""
    return open_app


@pytest.fixture
def page_text() -> Callable[[AppTest], str]:
    """page_text(at) -> all text on the page."""
    return app_text
