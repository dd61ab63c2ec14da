"""Home: what MaaS Lab is and the lesson list, each linked to its page, guide and notebook."""

import streamlit as st

from maaslab.errors import MaaslabError
from maaslab.lessons import load_lessons

st.title("MaaS Lab")
st.markdown(
    "Large models as a service, end to end and offline: start with gradient descent written by "
    "hand, end by serving a transformer behind a real API, explaining its answers and compressing "
    "it. Every lesson is a **guide**, a **notebook** and a **page** of this app, all computed by "
    "the same `maaslab` package, so the same input and seed give the same numbers everywhere."
)

try:
    lessons = load_lessons()
except MaaslabError as err:
    st.error(f"The lesson list could not be read: {err}")
    st.stop()

st.markdown(
    "**Start here:** read a lesson's guide, open its notebook in JupyterLab (the command under "
    "each lesson), and demo it on its page. Every page works offline on a laptop CPU."
)
st.header("Lessons")
if not lessons:
    st.info("No lessons found in lessons/.")
grid = st.columns(2, gap="medium")
for i, lesson in enumerate(lessons):
    with grid[i % 2].container(border=True):
        st.subheader(f"{lesson.number:02d} · {lesson.title}")
        st.caption(f"{lesson.minutes} minutes · notebook `{lesson.notebook}`")
        with st.expander("Objectives"):
            st.markdown("\n".join(f"- {objective}" for objective in lesson.objectives))
        cols = st.columns(2)
        with cols[0]:
            st.page_link(
                "views/guide.py",
                label="Read the guide",
                icon=":material/menu_book:",
                query_params={"lesson": lesson.slug},
            )
        if lesson.page_script:
            with cols[1]:
                st.page_link(
                    lesson.page_script, label="Open the page", icon=":material/play_arrow:"
                )
        st.code(lesson.notebook_command, language="bash", wrap_lines=True)
