"""The classroom editions in real kernels: the student edition runs with every check saying "not
attempted yet" and no error cell, and `classroom grade` grades a folder of sample submissions.

The student edition of all 17 notebooks runs clean (no error cell, all 70 checks "not attempted")
in 292 s here (fast mode, a shared 2-core machine): its heavy cells (training, explaining,
serving) run as in the teacher's edition, which test_notebooks.py already runs. That is more than
this file's share of the suite, so the student edition runs here for five notebooks (about 70 s)
that between them hold every kind of stub and every way a statement meets a missing answer:
stubbed function bodies (all five), values (01 `lr`, 02 `cfg`), a check called with a lambda over
a stub from another cell (01, 02), later cells that use an answer outside any check (01's numeric
gradient, 03's comparison with torch.optim.Adam, 16's body sizes), prints of the answer before
its check in the exercise cell (10), and names set next to a missing answer that later cells
need (16). Notebook 15 holds the same kinds as 16 (its `slots` and KV-cache sizes) and runs only
its teacher's edition here, to keep the suite within its time. For every notebook,
tests/unit/test_classroom.py builds the student edition, compiles each stubbed cell, and checks
every lesson's check with an unwritten answer, without a kernel.
"""

import csv
import os
import re
import time

import nbformat
import pytest
from nbclient import NotebookClient

from maaslab.__main__ import main
from maaslab.classroom import (
    BEGIN,
    END,
    STUDENT_SETUP,
    GradeConfig,
    exercises,
    grade,
    student_edition,
    verdict,
)
from maaslab.exercises.unanswered import SKIPPED_MIME
from maaslab.paths import NOTEBOOKS_DIR

# notebook -> text of a cell that must show the ⏳ note for a missing answer (None: no such cell;
# 02's only later use of an answer is inside checks, which say "not attempted" themselves)
STUDENT_RUN = {
    "01_gradient_descent": "numerical_gradient(",
    "02_minibatch_sgd": None,
    "03_optimizers": "torch_optimizer(",
    "10_explain_tabular": "fit_surrogate",
    "16_service_around_the_model": "body_bytes(",
}


def teacher(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)


@pytest.mark.notebook
@pytest.mark.parametrize("name", STUDENT_RUN)
def test_student_edition_runs_with_every_check_not_attempted(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MAASLAB_FAST", "1")
    monkeypatch.setenv("MAASLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = student_edition(teacher(name))
    assert nb.cells[1].source == STUDENT_SETUP
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()  # raises at the first error cell
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    verdicts = {gid: verdict(cell) for gid, cell in exercises(nb).items()}
    assert verdicts and all(status == "not attempted" for status, _ in verdicts.values()), verdicts
    assert all("is not written yet" in message for _, message in verdicts.values()), verdicts
    notes = [
        (cell.source, o["data"][SKIPPED_MIME]["message"])
        for cell in nb.cells
        for o in cell.get("outputs", [])
        if SKIPPED_MIME in o.get("data", {})
    ]
    if STUDENT_RUN[name] is not None:
        assert any(STUDENT_RUN[name] in source for source, _ in notes), notes
    assert all(m.startswith("⏳ ") and "is not written yet" in m for _, m in notes), notes


def _write(nb: nbformat.NotebookNode, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _replace(nb: nbformat.NotebookNode, grade_id: str, old: str, new: str):
    cell = exercises(nb)[grade_id]
    assert old in cell.source
    cell.source = cell.source.replace(old, new)
    return nb


def nbgrader_release(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What `nbgrader generate_assignment` hands out: each solution region replaced by its
    default stub, `# YOUR CODE HERE` and `raise NotImplementedError()`, at the region's indent."""
    pattern = re.compile(rf"^([ \t]*){re.escape(BEGIN)}\n.*?^[ \t]*{re.escape(END)}$", re.M | re.S)
    for cell in exercises(nb).values():
        cell.source = pattern.sub(r"\1# YOUR CODE HERE\n\1raise NotImplementedError()", cell.source)
        assert BEGIN not in cell.source and "NotImplementedError" in cell.source
    return nb


@pytest.mark.notebook
def test_grade_writes_a_row_per_student_notebook_and_exercise(tmp_path, capsys):
    name = "01_gradient_descent"
    submissions = tmp_path / "submissions"
    _write(teacher(name), submissions / "ada" / f"{name}.ipynb")  # right: the teacher's answers
    wrong = _replace(teacher(name), "learning_rate", "lr = 0.2", "lr = 5.0")  # diverges
    wrong = _replace(wrong, "gd_step", "return theta - lr *", "return theta - lr *)")
    _write(wrong, submissions / "bob" / f"{name}.ipynb")
    _write(student_edition(teacher(name)), submissions / "cy" / f"{name}.ipynb")  # untouched
    (submissions / "dan").mkdir()  # handed in nothing
    _write(nbgrader_release(teacher(name)), submissions / "eve" / f"{name}.ipynb")  # untouched
    out = tmp_path / "grades.csv"
    code = main(["classroom", "grade", str(submissions), "--notebook", name, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"ada/{name}: 3 passed" in printed and f"wrote {out}: 13 rows" in printed
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["student", "notebook", "exercise", "status", "message"]
    got = {(r["student"], r["exercise"]): r["status"] for r in rows}
    assert got == {
        ("ada", "mse_gradient"): "passed",
        ("ada", "gd_step"): "passed",
        ("ada", "learning_rate"): "passed",
        ("bob", "mse_gradient"): "passed",
        ("bob", "gd_step"): "error",
        ("bob", "learning_rate"): "failed",
        ("cy", "mse_gradient"): "not attempted",
        ("cy", "gd_step"): "not attempted",
        ("cy", "learning_rate"): "not attempted",
        ("dan", ""): "missing",
        ("eve", "mse_gradient"): "not attempted",
        ("eve", "gd_step"): "not attempted",
        ("eve", "learning_rate"): "not attempted",
    }
    by_key = {(r["student"], r["exercise"]): r["message"] for r in rows}
    assert "diverges" in by_key["bob", "learning_rate"]
    assert by_key["bob", "gd_step"].startswith("SyntaxError")
    assert by_key["dan", ""] == f"no dan/{name}.ipynb"
    assert all(r["notebook"] == name for r in rows)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.notebook
def test_grade_stops_a_notebook_at_its_deadline(tmp_path):
    # A course of one notebook whose first cell outlasts the deadline: the kernel is stopped,
    # the exercise after it is an error that says why, and grading goes on to write the CSV.
    course = tmp_path / "course"
    nb = nbformat.v4.new_notebook()
    exercise = nbformat.v4.new_code_cell(
        "### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n"
        "from maaslab.exercises.grading import passed\npassed('x', 'ok')"
    )
    exercise.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "x"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# slow"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(120)"),
        exercise,
    ]
    _write(nb, course / "slow.ipynb")
    _write(nb, tmp_path / "submissions" / "ada" / "slow.ipynb")
    started = time.perf_counter()
    rows = grade(tmp_path / "submissions", tmp_path / "g.csv", GradeConfig(deadline_s=8), course)
    assert time.perf_counter() - started < 60
    assert [(r.exercise, r.status) for r in rows] == [("x", "error")]
    assert "8 s deadline" in rows[0].message
    assert (tmp_path / "g.csv").read_text().count("\n") == 2
