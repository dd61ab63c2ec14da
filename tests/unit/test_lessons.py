import ast
import importlib.util
import json

import pytest

from maaslab import MaaslabError
from maaslab.lessons import guide_sentences, load_lessons, parse_lesson
from maaslab.paths import ROOT


def _router_pages() -> set[str]:
    tree = ast.parse((ROOT / "app" / "streamlit_app.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PAGES":
            return {entry[1] for entry in ast.literal_eval(node.value)}
    raise AssertionError("PAGES not found in the router")


def test_every_lesson_has_a_notebook_and_a_routed_page():
    lessons = load_lessons()
    assert lessons and lessons[0].slug == "00_tour"
    routed = _router_pages()
    for lesson in lessons:
        assert (ROOT / lesson.notebook).is_file(), lesson.notebook
        assert lesson.objectives and lesson.minutes > 0
        assert "## " in lesson.body  # a guide, not just front matter
        if lesson.page:
            assert (ROOT / "app" / "views" / f"{lesson.page}.py").is_file()
            assert lesson.page in routed


def _notebook_imports(path) -> set[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_every_lesson_names_the_modules_it_teaches_and_its_notebook_uses_them():
    for lesson in load_lessons():
        assert lesson.modules, f"{lesson.slug}: front matter names no modules"
        imported = _notebook_imports(ROOT / lesson.notebook)
        for name in lesson.modules:
            assert name.startswith("maaslab"), f"{lesson.slug}: {name} is not a maaslab module"
            assert importlib.util.find_spec(name) is not None, f"{lesson.slug}: no module {name}"
            # the module itself, something in it, or the package that holds it (not maaslab)
            assert any(
                i == name or i.startswith(name + ".") or name.startswith(i + ".")
                for i in imported - {"maaslab"}
            ), f"{lesson.slug}: its notebook does not import {name}"
        exercises = f"maaslab.exercises.{lesson.slug[3:]}"
        if importlib.util.find_spec(exercises) is not None:
            assert exercises in lesson.modules, f"{lesson.slug}: name its checks, {exercises}"


def test_every_page_file_is_routed():
    files = {p.stem for p in (ROOT / "app" / "views").glob("*.py")}
    assert files == _router_pages()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("tour.md", "---\ntitle: x\n---\n", "named NN_slug.md"),
        ("01_x.md", "# no front matter\n", "missing '---' front matter"),
        ("01_x.md", "---\ntitle: [unclosed\n---\nbody\n", "not valid YAML"),
        ("01_x.md", "---\ntitle: x\n---\nbody\n", "lacks notebook, minutes, objectives"),
    ],
)
def test_malformed_guides_are_named(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MaaslabError, match=message):
        parse_lesson(path)


def test_guide_sentences_are_prose_only():
    sentences = guide_sentences()
    assert len(sentences) > 100 and sentences == sorted(set(sentences))
    assert all(len(s) >= 40 and "```" not in s and "$$" not in s for s in sentences)
    assert any("learning rate" in s for s in sentences)


def test_the_readme_layout_map_lists_every_package_and_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    backend = layout.split("\nmaaslab/", 1)[1].split("\napp/", 1)[0]  # the maaslab/ block
    listed = {line.split()[0] for line in backend.splitlines()[1:] if line.startswith("  ")}
    package = ROOT / "maaslab"
    present = {p.name + ("/" if p.is_dir() else "") for p in package.iterdir()}
    present = {n for n in present if n.endswith((".py", "/")) and not n.startswith("__init__")}
    present.discard("__pycache__/")
    assert present - listed == set(), "add these to the README's layout map"
    assert listed - present == set(), "the README's layout map names modules that do not exist"
