"""Classroom editions without a kernel: solution markers, stubs, the third verdict, the grader's
reading of outputs, and the refusals of `classroom grade` (the kernels run in tests/notebooks)."""

import ast
import importlib
import inspect
import pkgutil
import re

import nbformat
import numpy as np
import pytest

import maaslab.exercises
from maaslab.__main__ import main
from maaslab.classroom import (
    BEGIN,
    END,
    STUDENT_SETUP,
    GradeConfig,
    exercises,
    grade,
    student_edition,
    student_source,
    verdict,
    write_student_edition,
)
from maaslab.errors import MaaslabError
from maaslab.exercises.distributed_training import check_global_batch_lr
from maaslab.exercises.gradient_descent import check_mse_gradient
from maaslab.exercises.grading import VERDICT_MIME, failed, not_attempted, passed
from maaslab.exercises.unanswered import (
    SKIPPED_MIME,
    NotAttempted,
    Unanswered,
    skip_missing_answers,
)
from maaslab.paths import NOTEBOOKS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def all_checks():
    """Every check_… function of every lesson module in maaslab.exercises."""
    helpers = {"maaslab.exercises.grading", "maaslab.exercises.unanswered"}
    found = []
    for info in pkgutil.walk_packages(maaslab.exercises.__path__, "maaslab.exercises."):
        if info.name in helpers:
            continue
        module = importlib.import_module(info.name)
        found += [
            fn
            for name, fn in inspect.getmembers(module, inspect.isfunction)
            if name.startswith("check_") and fn.__module__ == info.name
        ]
    return found


def test_every_check_says_not_attempted_for_an_unwritten_answer():
    checks = all_checks()
    assert len(checks) > 50
    for check in checks:
        result = check(Unanswered("answer"))
        assert result.status == "not attempted", f"{check.__module__}.{check.__name__}: {result}"
        assert not result and "answer is not written yet" in result.message


def test_a_stub_function_is_not_attempted_even_through_the_checks_own_except():
    def my_gradient(theta, X, y):
        raise NotAttempted("my_gradient")

    result = check_mse_gradient(my_gradient)
    assert result.status == "not attempted" and "my_gradient is not written yet" in str(result)
    assert str(result).startswith("⏳ not attempted yet")
    # an answer that calls an unwritten one is not attempted either; a real error still fails
    assert check_mse_gradient(lambda t, X, y: -my_gradient(t, X, y)).status == "not attempted"
    pair = (Unanswered("answer_batch"), Unanswered("answer_lr"))  # lesson 13 takes a tuple
    assert check_global_batch_lr(pair).status == "not attempted"
    broken = check_mse_gradient(lambda t, X, y: 1 / 0)
    assert broken.status == "failed" and "ZeroDivisionError" in broken.message


class _Shell:
    """The two things skip_missing_answers uses of IPython's shell."""

    def __init__(self) -> None:
        self.user_ns: dict = {}
        self.ast_transformers: list = []

    def run(self, source: str) -> None:
        tree = ast.parse(source)
        for transformer in self.ast_transformers:
            tree = transformer.visit(tree)
        exec(compile(tree, "<cell>", "exec"), self.user_ns)


def test_nbgraders_own_stub_is_not_attempted_and_a_real_not_implemented_still_fails():
    shell, shown = _Shell(), []
    skip_missing_answers(shell, shown.append)
    shell.user_ns["check_mse_gradient"] = check_mse_gradient
    # what `nbgrader generate_assignment` leaves in a function and at the top of a cell
    shell.run(
        "def my_gradient(theta, X, y):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
        "result = check_mse_gradient(my_gradient)"
    )
    result = shell.user_ns["result"]
    assert result.status == "not attempted" and "my_gradient is not written yet" in str(result)
    shell.run("# YOUR CODE HERE\nraise NotImplementedError\nlr = 0.1")
    # the cell stops there; what it would have set stands for the missing answer
    assert isinstance(shell.user_ns["lr"], Unanswered) and len(shown) == 1
    assert shown[0].message.startswith("⏳ this answer is not written yet")
    # NotImplementedError with a message is the learner's own error: a failed verdict
    shell.run(
        "def other(theta, X, y):\n    raise NotImplementedError('no idea yet')\n"
        "result = check_mse_gradient(other)"
    )
    failed_result = shell.user_ns["result"]
    assert failed_result.status == "failed" and "no idea yet" in failed_result.message


def test_nbgraders_stub_is_not_attempted_in_a_kernel_without_the_setup_cell():
    def my_gradient(theta, X, y):
        raise NotImplementedError()

    result = check_mse_gradient(my_gradient)
    assert result.status == "not attempted" and "my_gradient is not written yet" in str(result)
    result = check_mse_gradient(lambda t, X, y: my_gradient(t, X, y))  # the stub, one call down
    assert result.status == "not attempted" and "my_gradient is not written yet" in str(result)

    def own_error(theta, X, y):
        raise NotImplementedError("half done")

    result = check_mse_gradient(own_error)
    assert result.status == "failed" and "half done" in result.message


def test_verdicts_carry_a_json_twin_for_the_grader():
    for result, status in (
        (passed("x", "ok"), "passed"),
        (failed("x", "sign"), "failed"),
        (not_attempted("x", "later"), "not attempted"),
    ):
        bundle = result._repr_mimebundle_()
        assert bundle[VERDICT_MIME] == {"name": "x", "status": status, "message": result.message}
        assert bundle["text/markdown"] == str(result)


def test_unanswered_values_refuse_every_use_but_print():
    lr = Unanswered("lr")
    assert repr(lr) == str(lr) == "<lr: not written yet>"
    uses = [
        lambda: lr + 1,
        lambda: 2 * lr,
        lambda: float(lr),
        lambda: lr < 1,
        lambda: lr == 0.2,
        lambda: bool(lr),
        lambda: lr[0],
        lambda: lr.shape,
        lambda: f"{lr:.3f}",
        lambda: np.asarray(lr, dtype=float),
        lambda: np.zeros(3) + lr,
    ]
    for use in uses:
        with pytest.raises(NotAttempted, match="lr is not written yet"):
            use()


CELL = """def my_step(theta, lr):
    # Your answer: one update.
    ### BEGIN SOLUTION
    return theta - lr
    ### END SOLUTION


x = 1
### BEGIN SOLUTION
lr, (a, b) = 0.1, (1, 2)
steps: int = 3
### END SOLUTION
check_step(my_step)"""


def test_student_source_stubs_each_region_where_nbgrader_would():
    out = student_source(CELL).split("\n")
    assert out == [
        "def my_step(theta, lr):",
        "    # Your answer: one update.",
        "    # Write your answer here, then run this cell again.",
        '    raise NotAttempted("my_step")',
        "",
        "",
        "x = 1",
        "# Write your answer here, then run this cell again.",
        'lr = Unanswered("lr")',
        'a = Unanswered("a")',
        'b = Unanswered("b")',
        'steps = Unanswered("steps")',
        "check_step(my_step)",
    ]
    assert student_source("print(1)\n### BEGIN SOLUTION\nprint(2)\n### END SOLUTION").endswith(
        "raise NotAttempted()"
    )


@pytest.mark.parametrize(
    "source",
    [f"{BEGIN}\nx = 1", f"x = 1\n{END}", f"{BEGIN}\n{BEGIN}\nx = 1\n{END}\n{END}"],
    ids=["no end", "no begin", "nested"],
)
def test_student_source_refuses_broken_markers(source):
    with pytest.raises(MaaslabError, match="SOLUTION"):
        student_source(source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solution_cells_are_marked_for_nbgrader(path):
    nb = nbformat.read(path, as_version=4)
    ids = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert not re.search(r"#\s*-{2,}\s*(end of )?your answer", cell.source), "old marker"
        if any(line.strip() == BEGIN for line in cell.source.split("\n")):
            meta = cell.metadata.get("nbgrader", {})
            assert meta.get("solution") is True and meta.get("grade") is False, cell.source
            assert meta.get("schema_version") == 3
            assert re.fullmatch(r"[A-Za-z0-9_-]+", meta.get("grade_id", "")), meta
            assert re.search(r"check_\w+\(", cell.source.strip().split("\n")[-1]), "check last"
            ids.append(meta["grade_id"])
    assert len(ids) == len(set(ids)) == len(exercises(nb))


def test_the_student_edition_keeps_every_other_cell(tmp_path):
    written = write_student_edition(tmp_path / "student")
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    with_exercises = 0
    for path in NOTEBOOKS:
        teacher = nbformat.read(path, as_version=4)
        student = nbformat.read(tmp_path / "student" / path.name, as_version=4)
        solutions = exercises(teacher)
        cells = student.cells
        if solutions:
            with_exercises += 1
            assert cells[1].source == STUDENT_SETUP
            cells = [cells[0], *cells[2:]]
        assert len(cells) == len(teacher.cells)
        for old, new in zip(teacher.cells, cells, strict=True):
            if any(old is c for c in solutions.values()):
                assert BEGIN not in new.source and END not in new.source
                ast.parse(new.source)  # a stub keeps the cell valid Python
                assert "NotAttempted(" in new.source or "Unanswered(" in new.source
            else:
                assert new.source == old.source
    assert with_exercises >= 15
    with pytest.raises(MaaslabError, match="not a new or empty folder"):
        write_student_edition(tmp_path / "student")


def _cell(outputs, count=1):
    cell = nbformat.v4.new_code_cell("check_x(x)")
    cell.outputs, cell.execution_count = [nbformat.from_dict(o) for o in outputs], count
    return cell


def test_verdict_reads_the_json_twin_errors_notes_and_cells_that_never_ran():
    shown = {"output_type": "execute_result", "execution_count": 1, "metadata": {}}
    record = {"name": "gd step", "status": "failed", "message": "uphill"}
    assert verdict(_cell([{**shown, "data": {VERDICT_MIME: record}}])) == (
        "failed",
        "gd step: uphill",
    )
    error = {"output_type": "error", "ename": "SyntaxError", "evalue": "bad", "traceback": []}
    assert verdict(_cell([error])) == ("error", "SyntaxError: bad")
    note = {"output_type": "display_data", "metadata": {}, "data": {SKIPPED_MIME: {"message": "m"}}}
    assert verdict(_cell([note])) == ("not attempted", "m")
    assert verdict(_cell([], count=None))[0] == "error"
    text = {**shown, "data": {"text/plain": "✅ correct: gd step. fine"}}  # text is not read
    bogus = {**shown, "data": {VERDICT_MIME: {"name": "x", "status": "excellent"}}}
    assert verdict(_cell([bogus]))[1].startswith("no verdict")
    assert verdict(_cell([text]))[1].startswith("no verdict")


def test_student_edition_of_a_notebook_without_exercises_is_unchanged():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t")])
    assert student_edition(nb) == nb


@pytest.mark.parametrize("layout", ["absent", "file", "empty"])
def test_grade_refuses_a_bad_folder_and_writes_nothing(tmp_path, capsys, layout):
    submissions = tmp_path / "submissions"
    if layout == "file":
        submissions.write_text("not a folder")
    elif layout == "empty":
        (submissions / ".git").mkdir(parents=True)
    out = tmp_path / "grades.csv"
    assert main(["classroom", "grade", str(submissions), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maaslab classroom: error:") and "<student>/<notebook>.ipynb" in err
    assert "Traceback" not in err and len(err.strip().split("\n")) == 1
    assert not out.exists()


def test_grade_refuses_an_unknown_notebook_before_running_anything(tmp_path):
    (tmp_path / "ada").mkdir()
    with pytest.raises(MaaslabError, match="not a notebook with exercises: 99_nothing"):
        grade(tmp_path, tmp_path / "g.csv", GradeConfig(notebooks=("99_nothing",)))
    with pytest.raises(MaaslabError, match="deadline_s"):
        GradeConfig(deadline_s=0)
    assert not (tmp_path / "g.csv").exists()


def test_an_unreadable_submission_is_an_error_row_per_exercise(tmp_path):
    (tmp_path / "ada" / "01_gradient_descent.ipynb").parent.mkdir()
    (tmp_path / "ada" / "01_gradient_descent.ipynb").write_text("{not json")
    rows = grade(tmp_path, tmp_path / "g.csv", GradeConfig(notebooks=("01_gradient_descent",)))
    assert [(r.exercise, r.status) for r in rows] == [
        ("mse_gradient", "error"),
        ("gd_step", "error"),
        ("learning_rate", "error"),
    ]
    assert all(r.message.startswith("cannot read 01_gradient_descent.ipynb") for r in rows)
