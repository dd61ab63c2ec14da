"""The lesson catalogue: `lessons/NN_slug.md` files with YAML front matter.

Front matter fields: title, notebook (path from the repository root), page (an app page file
stem, e.g. training_studio), minutes, objectives (a list), modules (the `maaslab` modules the
lesson teaches, dotted names, so a learner knows where its code lives). The body is the guide
in Markdown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from maaslab.errors import MaaslabError
from maaslab.paths import LESSONS_DIR, ROOT

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n(.*)\Z", re.S)
_NAME = re.compile(r"\A(\d{2})_([a-z0-9_]+)\.md\Z")


@dataclass(frozen=True)
class Lesson:
    """One lesson: its guide, its notebook and the app page that demos it."""

    number: int
    slug: str  # "00_tour"
    title: str
    notebook: str  # "notebooks/00_tour.ipynb"
    page: str  # app page file stem, "" if the lesson has none
    minutes: int
    objectives: tuple[str, ...]
    modules: tuple[str, ...]  # "maaslab.optimization.descent", ...: the code the lesson teaches
    body: str  # the guide's Markdown, without the front matter

    @property
    def path(self) -> Path:
        """The guide's file."""
        return LESSONS_DIR / f"{self.slug}.md"

    @property
    def notebook_command(self) -> str:
        """The shell command that opens this lesson's notebook, from the repository root."""
        return f".venv/bin/jupyter lab {self.notebook}"

    @property
    def page_script(self) -> str | None:
        """The app page that demos this lesson ("views/<stem>.py"), if it has one that exists."""
        if self.page and (ROOT / "app" / "views" / f"{self.page}.py").is_file():
            return f"views/{self.page}.py"
        return None


def parse_lesson(path: Path) -> Lesson:
    """Read one guide; a missing or malformed front matter raises MaaslabError naming the file."""
    match = _NAME.match(path.name)
    if not match:
        raise MaaslabError(f"{path.name}: lesson files are named NN_slug.md")
    front = _FRONT.match(path.read_text(encoding="utf-8"))
    if not front:
        raise MaaslabError(f"{path}: missing '---' front matter")
    try:
        meta = yaml.safe_load(front.group(1)) or {}
    except yaml.YAMLError as err:
        raise MaaslabError(f"{path}: front matter is not valid YAML: {err}") from None
    required = ("title", "notebook", "minutes", "objectives", "modules")
    missing = [k for k in required if k not in meta]
    if missing:
        raise MaaslabError(f"{path}: front matter lacks {', '.join(missing)}")
    return Lesson(
        number=int(match.group(1)),
        slug=path.stem,
        title=str(meta["title"]),
        notebook=str(meta["notebook"]),
        page=str(meta.get("page") or ""),
        minutes=int(meta["minutes"]),
        objectives=tuple(str(o) for o in meta["objectives"]),
        modules=tuple(str(m) for m in meta["modules"]),
        body=front.group(2).strip(),
    )


def load_lessons(folder: Path = LESSONS_DIR) -> list[Lesson]:
    """All lessons in `folder`, in lesson-number order."""
    return sorted(
        (parse_lesson(p) for p in folder.glob("[0-9][0-9]_*.md")), key=lambda les: les.number
    )


def lessons_for_page(page: str, folder: Path = LESSONS_DIR) -> list[Lesson]:
    """The lessons whose demo page is `page` (a page file stem), in order."""
    return [les for les in load_lessons(folder) if les.page == page]


def guide_sentences(min_chars: int = 40) -> list[str]:
    """Every sentence of the lesson guides (prose only, no formulas or code), sorted, unique.

    A small offline corpus that the embedding demo searches: "find the passage about …".
    """
    found: set[str] = set()
    for lesson in load_lessons():
        prose = re.sub(r"```.*?```|\$\$.*?\$\$", " ", lesson.body, flags=re.S)
        for paragraph in prose.split("\n\n"):
            text = " ".join(line.strip(" -*#>|") for line in paragraph.splitlines())
            for sentence in re.split(r"(?<=[.!?])\s+", text):
                sentence = sentence.strip().replace("**", "")
                if len(sentence) >= min_chars and "|" not in sentence:
                    found.add(sentence)
    return sorted(found)
