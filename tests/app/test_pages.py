"""Every page through Streamlit's AppTest: renders with no exception, widgets do what they say."""

from maaslab.lessons import load_lessons


def test_home_lists_every_lesson_with_links(open_page, page_text):
    at = open_page()
    text = page_text(at)
    assert "MaaS Lab" in text
    for lesson in load_lessons():
        assert lesson.title in text
    assert "Device: cpu" in page_text(at) or "Device: cuda" in page_text(at)
    assert any(".venv/bin/jupyter lab notebooks/00_tour.ipynb" in c.value for c in at.code)


def test_guide_page_reads_the_lesson_from_the_url(open_page, page_text):
    at = open_page("guide", lesson="00_tour")
    assert at.selectbox(key="guide.lesson").value == "00_tour"
    text = page_text(at)
    assert "A tour of MaaS Lab" in text and "Exercises" in text


def test_guide_page_survives_an_unknown_lesson(open_page, page_text):
    at = open_page("guide", lesson="99_nope")
    assert "ignored lesson='99_nope' from the URL (no such lesson)" in page_text(at)
    assert at.selectbox(key="guide.lesson").value == load_lessons()[0].slug
