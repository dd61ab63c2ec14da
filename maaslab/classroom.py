"""Classroom editions of the notebooks: a student edition to hand out, and grading of submissions.

The notebooks are the teacher's edition: each exercise cell holds its answer between nbgrader's
delimiters, in a cell that nbgrader's metadata marks as a solution cell with a `grade_id`::

    def my_gradient(theta, X, y):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION


    check_mse_gradient(my_gradient)

so nbgrader itself (`nbgrader generate_assignment`, `autograde`) can run the course. Without
nbgrader, `student_edition` replaces each region the way nbgrader's ClearSolutions does (the
stub takes the region's place, at the indentation of `### BEGIN SOLUTION`), with stubs that
keep every cell running (`maaslab.exercises.unanswered`): inside a function,
`raise NotAttempted("my_gradient")`; for a value, `lr = Unanswered("lr")`. A first cell imports
both names and makes the kernel skip, with a note, whatever needs an answer not written yet.

`grade` executes each submitted notebook with nbclient (a fresh kernel per notebook, fast mode,
a deadline) and reads each exercise cell's verdicts from their JSON twin (`VERDICT_MIME`), never
from the text a learner sees. Submissions are laid out as nbgrader's are, one folder per student:
SUBMISSIONS/<student>/<notebook>.ipynb, e.g. SUBMISSIONS/ada/01_gradient_descent.ipynb.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import csv
import io
import os
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import nbformat

from maaslab.errors import MaaslabError
from maaslab.exercises.grading import VERDICT_MIME
from maaslab.exercises.unanswered import SKIPPED_MIME
from maaslab.paths import NOTEBOOKS_DIR

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"  # nbgrader's delimiters, as written
STUDENT_SETUP = """\
# Student edition: write each answer where its stub stands (`raise NotAttempted(...)` or
# `Unanswered(...)`). Until then its check says "not attempted yet", and what needs the answer
# elsewhere is skipped with a ⏳ note instead of an error.
from IPython import get_ipython
from IPython.display import display

from maaslab.exercises.unanswered import NotAttempted, Unanswered, skip_missing_answers

skip_missing_answers(get_ipython(), display)"""
STATUSES = ("passed", "failed", "not attempted", "error", "missing")


@dataclass(frozen=True)
class GradeConfig:
    """How `grade` runs the submitted notebooks."""

    notebooks: tuple[str, ...] = ()  # notebook names to grade, e.g. ("01_gradient_descent",);
    # () = every course notebook that has exercises
    deadline_s: float = 600.0  # wall-clock limit for one submitted notebook, kernel start included
    fast: bool = True  # MAASLAB_FAST=1 in the kernel: the lessons' small settings; same checks
    kernel: str = "python3"  # Jupyter kernel that runs the submissions

    def __post_init__(self) -> None:
        if self.deadline_s <= 0:
            raise MaaslabError(f"deadline_s must be above 0 seconds, got {self.deadline_s}")


@dataclass(frozen=True)
class Row:
    """One line of the grades CSV."""

    student: str  # the submission's folder name
    notebook: str  # e.g. "01_gradient_descent"
    exercise: str  # the exercise cell's nbgrader grade_id ("" for a missing notebook)
    status: str  # one of STATUSES
    message: str  # the check's verdict, the error, or what is missing


def exercises(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """The solution cells of a notebook by their nbgrader grade_id, in notebook order."""
    found = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution") and meta.get("grade_id"):
            found[meta["grade_id"]] = cell
    return found


def course_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The teacher's notebooks that hold at least one exercise, sorted by name."""
    return [
        p
        for p in sorted(notebooks_dir.glob("*.ipynb"))
        if exercises(nbformat.read(p, as_version=4))
    ]


def _stub(region: list[str], indent: str, function: str | None) -> list[str]:
    # Inside a function the stub raises; at top level each name the answer assigns becomes an
    # Unanswered value, so later lines and cells reach NotAttempted only when they use it.
    note = f"{indent}# Write your answer here, then run this cell again."
    if function is not None:
        return [note, f'{indent}raise NotAttempted("{function}")']
    names = _assigned_names(textwrap.dedent("\n".join(region)))
    if not names:
        return [note, f"{indent}raise NotAttempted()"]
    return [note, *(f'{indent}{name} = Unanswered("{name}")' for name in names)]


def _assigned_names(code: str) -> list[str]:
    # The names that the top-level assignments of `code` set, in order, tuples unpacked (a loop
    # variable is not an answer).
    names: list[str] = []
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name) and name.id not in names:
                    names.append(name.id)
    return names


def student_source(source: str) -> str:
    """A cell's source with every solution region replaced by its stub."""
    lines = source.split("\n")
    regions, start = [], None
    for index, line in enumerate(lines):
        if line.strip() == BEGIN:
            if start is not None:
                raise MaaslabError(f"nested {BEGIN!r} in a cell:\n{source}")
            start = index
        elif line.strip() == END:
            if start is None:
                raise MaaslabError(f"{END!r} without {BEGIN!r} in a cell:\n{source}")
            regions.append((start, index))
            start = None
    if start is not None:
        raise MaaslabError(f"{BEGIN!r} without {END!r} in a cell:\n{source}")
    for first, last in reversed(regions):  # from the end, so earlier indices stay valid
        indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
        stub = _stub(lines[first + 1 : last], indent, _enclosing_function(lines, first, last))
        lines[first : last + 1] = stub
    return "\n".join(lines)


def _enclosing_function(lines: list[str], first: int, last: int) -> str | None:
    # The region stands for statements: put one `pass` in its place and ask the parser which
    # function holds it (trailing comments are outside a function's span, a statement is not).
    indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
    probe = ast.parse("\n".join([*lines[:first], indent + "pass", *lines[last + 1 :]]))
    line = first + 1
    holders = [
        node
        for node in ast.walk(probe)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.lineno < line <= (node.end_lineno or 0)
    ]
    return max(holders, key=lambda f: f.lineno).name if holders else None


def student_edition(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student edition of a teacher's notebook: stubs for answers, outputs cleared, and the
    setup cell (after the title) when the notebook has exercises."""
    nb = copy.deepcopy(nb)
    solutions = exercises(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if any(c is cell for c in solutions.values()):
                cell.source = student_source(cell.source)
    if solutions:
        nb.cells.insert(1, nbformat.v4.new_code_cell(STUDENT_SETUP))
    return nb


def write_student_edition(out: Path, notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Write the student edition of every notebook into `out` (a new or empty folder)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MaaslabError(f"{out} is not a new or empty folder: choose another OUT")
    sources = sorted(notebooks_dir.glob("*.ipynb"))
    if not sources:
        raise MaaslabError(f"no notebooks in {notebooks_dir}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sources:
        text = nbformat.writes(student_edition(nbformat.read(path, as_version=4)))
        written.append(_write_atomically(out / path.name, text))
    return written


def _write_atomically(path: Path, text: str) -> Path:
    # A reader never sees half a file: write beside it, then rename over it.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)
    return path


def verdict(cell: nbformat.NotebookNode) -> tuple[str, str]:
    """(status, message) of an executed exercise cell, from its outputs."""
    rank = ("failed", "not attempted", "passed")  # with several verdicts, the worst counts
    records = [
        o["data"][VERDICT_MIME]
        for o in cell.get("outputs", [])
        if o.get("output_type") in ("execute_result", "display_data")
        and o["data"].get(VERDICT_MIME, {}).get("status") in rank
    ]
    if records:
        worst = min(records, key=lambda r: rank.index(r["status"]))
        return worst["status"], f"{worst.get('name')}: {worst.get('message')}"
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            return "error", f"{o['ename']}: {o['evalue']}"
        if SKIPPED_MIME in o.get("data", {}):
            return "not attempted", o["data"][SKIPPED_MIME]["message"]
    if cell.get("execution_count") is None:
        return "error", "the cell did not run: the notebook stopped before it"
    return "error", "no verdict: keep the check_… call as the last line of the exercise cell"


def grade_notebook(path: Path, expected: list[str], config: GradeConfig) -> list[tuple[str, ...]]:
    """Execute one submitted notebook; (exercise, status, message) for each expected exercise."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # a submission can be any file: say what it is, grade the rest
        return [(e, "error", f"cannot read {path.name}: {err}") for e in expected]
    nb.cells.insert(0, nbformat.v4.new_code_cell(STUDENT_SETUP))
    stopped = ""
    with tempfile.TemporaryDirectory(prefix="maaslab-grade-") as work:
        env = {**os.environ, "MAASLAB_RUNS": str(Path(work) / "runs")}
        env["MAASLAB_FAST"] = "1" if config.fast else "0"
        env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        stopped = _execute(nb, config, work, env)
    found = exercises(nb)
    rows = []
    for exercise in expected:
        if exercise not in found:
            rows.append((exercise, "error", "this exercise's cell is missing from the notebook"))
            continue
        status, message = verdict(found[exercise])
        if stopped and status == "error":  # say why the notebook stopped where it did
            message = f"{message} ({stopped})"
        rows.append((exercise, status, message))
    return rows


def _execute(nb: nbformat.NotebookNode, config: GradeConfig, work: str, env: dict) -> str:
    # allow_errors: a failing cell is a verdict on that cell, the rest still runs. The kernel is
    # a new process (jupyter_client starts it with subprocess), killed at the deadline.
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    client = NotebookClient(
        nb,
        timeout=int(config.deadline_s),
        kernel_name=config.kernel,
        allow_errors=True,
        shutdown_kernel="immediate",
        resources={"metadata": {"path": work}},
    )
    started = time.monotonic()
    late = f"the notebook ran past its {config.deadline_s:g} s deadline"
    try:
        asyncio.run(asyncio.wait_for(client.async_execute(env=env), config.deadline_s))
    except (TimeoutError, CellTimeoutError):
        return late
    except DeadKernelError as err:  # also what a wait cut short by the deadline can raise
        return (
            late if time.monotonic() - started >= config.deadline_s else f"the kernel died: {err}"
        )
    return ""


def grade(
    submissions: Path,
    out: Path,
    config: GradeConfig = GradeConfig(),
    notebooks_dir: Path = NOTEBOOKS_DIR,
    on_notebook: Callable[[list[Row]], None] | None = None,
) -> list[Row]:
    """Grade SUBMISSIONS/<student>/<notebook>.ipynb against the course; write the CSV `out`.

    Parameters
    ----------
    submissions: one folder per student, each holding that student's notebooks.
    out: the CSV to write (student, notebook, exercise, status, message), written at the end
        in one step, so a failed run leaves no half-written file.
    config: which notebooks, the deadline and fast mode.
    notebooks_dir: the teacher's notebooks, which say what each notebook's exercises are.
    on_notebook: called with the rows of each graded notebook (progress).
    """
    if not submissions.is_dir():
        raise MaaslabError(
            f"{submissions} is not a folder: expected SUBMISSIONS/<student>/<notebook>.ipynb"
        )
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and p.name[0] not in "._")
    if not students:
        raise MaaslabError(
            f"no student folders in {submissions}: expected SUBMISSIONS/<student>/<notebook>.ipynb"
        )
    course = {p.stem: p for p in course_notebooks(notebooks_dir)}
    unknown = [name for name in config.notebooks if name not in course]
    if unknown:
        raise MaaslabError(
            f"not a notebook with exercises: {', '.join(unknown)} (see {notebooks_dir})"
        )
    chosen = {name: course[name] for name in config.notebooks or course}
    expected = {name: list(exercises(nbformat.read(p, as_version=4))) for name, p in chosen.items()}
    rows: list[Row] = []
    for student in students:
        for name in chosen:
            path = student / f"{name}.ipynb"
            if path.is_file():
                done = [
                    Row(student.name, name, *r)
                    for r in grade_notebook(path, expected[name], config)
                ]
            else:
                done = [Row(student.name, name, "", "missing", f"no {student.name}/{name}.ipynb")]
            rows += done
            if on_notebook is not None:
                on_notebook(done)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([f.name for f in fields(Row)])
    writer.writerows(astuple(r) for r in rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(out, text.getvalue())
    return rows
