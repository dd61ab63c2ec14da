"""Lesson guides: read a lesson's guide in the app; the URL (?lesson=00_tour) picks which."""

import streamlit as st
from components import link_warning

from maaslab.errors import MaaslabError
from maaslab.lessons import load_lessons
from maaslab.paths import ROOT
from maaslab.urlstate import quoted

try:
    lessons = {lesson.slug: lesson for lesson in load_lessons()}
except MaaslabError as err:
    st.error(f"The lesson guides could not be read: {err}")
    st.stop()
if not lessons:
    st.info("No lessons found in lessons/.")
    st.stop()

asked = st.query_params.get("lesson")
slugs = list(lessons)
if asked is not None and asked not in lessons:
    link_warning(
        [f"ignored lesson={quoted(asked)} from the URL (no such lesson); using {slugs[0]}"]
    )
slug = st.selectbox(
    "Lesson",
    slugs,
    index=slugs.index(asked) if asked in lessons else 0,
    format_func=lambda s: f"{lessons[s].number:02d} · {lessons[s].title}",
    key="guide.lesson",
)
st.query_params["lesson"] = slug
lesson = lessons[slug]

st.title(lesson.title)
cols = st.columns([2, 1])
with cols[0]:
    st.caption(f"{lesson.minutes} minutes")
    st.markdown("**Objectives**\n\n" + "\n".join(f"- {o}" for o in lesson.objectives))
with cols[1]:
    if lesson.page_script:
        st.page_link(lesson.page_script, label="Open the page", icon=":material/play_arrow:")
    notebook = ROOT / lesson.notebook
    if notebook.is_file():
        st.download_button(
            "Download the notebook",
            notebook.read_bytes(),
            file_name=notebook.name,
            mime="application/x-ipynb+json",
            icon=":material/download:",
        )
    st.code(lesson.notebook_command, language="bash")
st.divider()
st.markdown(lesson.body)
