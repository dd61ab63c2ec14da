"""MaaS Lab app: the router. Declares the pages and the shared sidebar; nothing else."""

from pathlib import Path

import streamlit as st

from maaslab.device import describe
from maaslab.errors import MaaslabError
from maaslab.lessons import lessons_for_page

st.set_page_config(page_title="MaaS Lab", page_icon=":material/science:", layout="wide")

# (section, file stem in app/views, title, icon). A lesson's front matter names its page by stem.
PAGES = [
    ("Learn", "home", "Home", ":material/home:"),
    ("Learn", "guide", "Lesson guides", ":material/menu_book:"),
    ("Train", "gradient_descent_lab", "Gradient Descent Lab", ":material/landscape:"),
    ("Train", "training_studio", "Training Studio", ":material/model_training:"),
    ("Use", "inference", "Inference", ":material/bolt:"),
    ("Use", "explain", "Explain", ":material/insights:"),
    ("Use", "serve", "Serve", ":material/dns:"),
    ("Use", "compress", "Compress", ":material/compress:"),
    ("Use", "federated", "Federated", ":material/hub:"),
]

sections: dict[str, list] = {}
stem_of: dict[str, str] = {}
for section, stem, title, icon in PAGES:
    page = st.Page(f"views/{stem}.py", title=title, icon=icon, default=stem == "home")
    sections.setdefault(section, []).append(page)
    stem_of[title] = stem
current = st.navigation(sections)


@st.cache_data(show_spinner=False)
def _device_summary() -> str:
    return describe().summary()


with st.sidebar:
    st.caption(f"Device: {_device_summary()}")
    try:
        lessons = lessons_for_page(stem_of.get(current.title, ""))
    except MaaslabError as err:
        lessons = []
        st.warning(f"Lesson list unreadable: {err}")
    for lesson in lessons:
        st.page_link(
            "views/guide.py",
            label=f"Lesson {lesson.number:02d}: {lesson.title}",
            icon=":material/school:",
            query_params={"lesson": lesson.slug},
        )
        st.caption(f"Notebook: `{Path(lesson.notebook).name}`")

current.run()
