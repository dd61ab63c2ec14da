"""Values from a shared link are shown as plain text, never as Markdown: a crafted link cannot put
a live link, an image the browser fetches, HTML, coloured text, an icon or LaTeX on a page, and a
link value thousands of characters long does not flood it. (tests/browser checks the rendering.)
"""

import importlib.util
import re
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
CRAFTED = [
    "[click here](https://example.com)",
    "![x](http://127.0.0.1:9/x.png)",
    "<img src=x onerror=alert(1)>",
    ":red[x]",
    "$x$",
    ":material/home: https://example.com",
    "`` ` code",
]
FLOOD = "[a](https://example.com)" * 250  # 6,000 characters


@pytest.fixture(scope="module")
def components():
    """app/components.py, imported under another name than the pages use."""
    spec = importlib.util.spec_from_file_location("app_components", APP / "components.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outside_code(markdown: str) -> str:
    """The Markdown without its code spans: the part Streamlit would read as markup."""
    return re.sub(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)", "", markdown, flags=re.S)


def _assert_plain(markdown: str, value: str) -> None:
    """`value` appears in `markdown` only inside code spans."""
    outside = _outside_code(markdown)
    for sign in ("](", "<", "$", ":red[", "material", "http", "example.com", "127.0.0.1"):
        assert sign not in outside, (sign, markdown)
    assert value[:20] in markdown.replace("\u2060", "")  # the word joiner after ":material"


@pytest.mark.parametrize("text", [*CRAFTED, FLOOD, "a\n\n# b", "x" * 300])
def test_literal_keeps_text_inside_one_code_span(components, text):
    shown = components.literal(text)
    fence = re.match("`+", shown)[0]
    assert shown.startswith(f"{fence} ") and shown.endswith(f" {fence}")
    inner = shown[len(fence) + 1 : -len(fence) - 1]
    assert fence not in inner and "\n" not in inner  # nothing closes the span early
    assert len(inner) <= components.MESSAGE_CHARS
    if len(text) <= components.MESSAGE_CHARS:
        assert inner.replace("\u2060", "") == " ".join(text.split())


def _warnings(at) -> str:
    return "\n".join(w.value for w in at.warning)


def _every_text(at) -> list[str]:
    return [
        str(e.value)
        for kind in ("markdown", "caption", "warning", "info", "error")
        for e in getattr(at, kind)
    ]


def _assert_page_safe(at, value: str) -> None:
    assert not at.exception, at.exception
    assert at.warning, "the link's value was not reported"
    for text in _every_text(at):
        if value[:20] in text.replace("\u2060", "") or "example.com" in text:
            _assert_plain(text, value)
    assert len(_warnings(at)) < 8000  # 20 lines of at most 300 characters, and the frame


@pytest.mark.parametrize("value", [*CRAFTED, FLOOD])
def test_the_guide_shows_a_crafted_lesson_as_text(open_page, value):
    at = open_page("guide", lesson=value)
    _assert_page_safe(at, value)
    assert at.selectbox(key="guide.lesson").value == "00_tour"


@pytest.mark.parametrize("value", [*CRAFTED, FLOOD])
def test_the_studio_shows_crafted_settings_as_text(open_page, value):
    fields = ("dataset", "activation", "optimizer", "lr", "width", "model")
    at = open_page("training_studio", **dict.fromkeys(fields, value))
    _assert_page_safe(at, value)
    warning = _warnings(at)
    for name in fields:
        assert f"ignored {name}=" in warning, name
    train = next(b for b in at.button if b.label == "Train")
    assert not train.disabled and at.number_input(key="studio.seed").value == 0


@pytest.mark.parametrize("value", [*CRAFTED, FLOOD])
def test_the_lab_shows_crafted_settings_as_text(open_page, value):
    fields = ("surface", "opt", "lr", "momentum", "start", "steps")
    at = open_page("gradient_descent_lab", **dict.fromkeys(fields, value), **{value: "1"})
    _assert_page_safe(at, value)
    warning = _warnings(at)
    for name in (*fields, "unknown URL parameters"):
        assert f"ignored {name}" in warning, name
    assert at.table and len(at.get("plotly_chart")) == 2  # the default race still runs


@pytest.mark.parametrize("value", [CRAFTED[0], CRAFTED[1], FLOOD])
def test_a_crafted_model_name_is_refused_as_text(open_page, value):
    at = open_page("inference", model=value)
    _assert_page_safe(at, value)
    picker = at.selectbox(key="infer.model")
    assert picker.value == picker.options[0] and at.query_params["model"] == picker.value
    picker.set_value(picker.options[1]).run()
    assert not at.warning  # the warning is about the link: it goes once a model is picked


def test_a_known_model_name_is_taken_without_a_warning(open_page):
    at = open_page("inference", model="digits-cnn")
    assert at.selectbox(key="infer.model").value == "digits-cnn" and not at.warning
