"""An answer not written yet: what the student edition of a notebook runs with.

`python -m maaslab classroom student OUT` (see `maaslab.classroom`) replaces each solution region
of the notebooks with a stub. Inside a function the stub is `raise NotAttempted("name")`; for an
answer that is a value it is `name = Unanswered("name")`, a value whose every use raises
`NotAttempted`. A check decorated with `maaslab.exercises.grading.exercise` turns either into a
"not attempted yet" verdict. Once `skip_missing_answers(get_ipython(), display)` has run in the
kernel (the student edition's first cell), a cell that reaches such an answer anywhere else (a
comparison with the library, a plot of your function) stops there with one ⏳ note instead of a
traceback; the names its skipped statements would set stand for the same missing answer, so a
later cell that needs them is skipped in turn, and every cell that does not need them runs.
nbgrader's own stub, a bare `raise NotImplementedError()`, is read there as `NotAttempted` too,
so a notebook released by `nbgrader generate_assignment` grades the same way.

`NotAttempted` derives from BaseException, like KeyboardInterrupt: the checks and the learner's
own code catch `Exception` to turn a wrong answer into a verdict, and a missing answer must pass
through them to the check's decorator (or to the cell) to be told apart from a wrong one.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from functools import partial
from typing import Any

# Output type of the note a cell shows when it stopped at an answer not written yet; the grader
# (maaslab.classroom) reads it from the executed notebook.
SKIPPED_MIME = "application/vnd.maaslab.skipped+json"


class NotAttempted(BaseException):
    """Raised where an answer is not written yet: the stub of the student edition."""

    def __init__(self, answer: str = "this answer") -> None:
        super().__init__(
            f"{answer} is not written yet: replace the stub with your answer and run the cell again"
        )
        self.answer = answer


class Unanswered:
    """The value of an answer not written yet: printing it is fine, using it raises
    `NotAttempted` (arithmetic, comparison, conversion, indexing, attributes, calls)."""

    __slots__ = ("answer",)

    def __init__(self, answer: str) -> None:
        object.__setattr__(self, "answer", answer)

    def __repr__(self) -> str:
        return f"<{self.answer}: not written yet>"

    def __getattr__(self, name: str) -> object:
        # Private and dunder names stay plain misses so that repr, IPython's display and
        # NumPy's protocol probes see an ordinary object; a public attribute is a use.
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotAttempted(self.answer)

    def __setattr__(self, name: str, value: object) -> None:
        raise NotAttempted(self.answer)

    def _refuse(self, *args: object, **kwargs: object) -> object:
        raise NotAttempted(self.answer)


# Every operation a use of the value goes through. Set after the class is made so that __hash__
# stays object's (defining __eq__ in the class body would remove it).
REFUSED = (
    "__array__ __bool__ __len__ __iter__ __contains__ __getitem__ __setitem__ __call__ __format__ "
    "__float__ __int__ __index__ __complex__ __round__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__ "
    "__neg__ __pos__ __abs__ __invert__ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ "
    "__truediv__ __rtruediv__ __floordiv__ __rfloordiv__ __mod__ __rmod__ __pow__ __rpow__ "
    "__matmul__ __rmatmul__ __and__ __rand__ __or__ __ror__"
)
for _dunder in REFUSED.split():
    setattr(Unanswered, _dunder, Unanswered._refuse)


def unanswered_in(value: object) -> Unanswered | None:
    """The `Unanswered` that `value` is, or holds directly in a tuple or list; else None."""
    if isinstance(value, Unanswered):
        return value
    if isinstance(value, tuple | list):
        return next((v for v in value if isinstance(v, Unanswered)), None)
    return None


class Skipped:
    """What one cell skipped for an answer not written yet: one note, shown (by `show`, the
    notebook's display function) when it stops."""

    def __init__(self, show: Callable[[object], object]) -> None:
        self.show = show
        self.running = True  # False from the first statement that needed a missing answer on
        self.missing: Unanswered | None = None  # what the names of skipped statements stand for
        self.message = ""

    def skip(self, why: NotAttempted) -> None:
        """Stop the cell here: show the note once; the rest of the cell is skipped."""
        self.running, self.missing = False, Unanswered(why.answer)
        self.message = f"⏳ {why} (the rest of this cell was skipped)"
        self.show(self)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict:
        return {"text/plain": self.message, SKIPPED_MIME: {"message": self.message}}


# Names the rewritten cells use; long enough not to meet a learner's own names.
_ERROR, _CELL, _WHY = "_maaslab_NotAttempted", "_maaslab_cell", "_maaslab_why"
_VALUE = "_maaslab_value"


def _bound_names(statement: ast.stmt) -> list[str]:
    # The names a top-level statement sets in the notebook's namespace (not those local to a
    # function, class, lambda or comprehension inside it).
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [statement.name]
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return [a.asname or a.name.split(".")[0] for a in statement.names if a.name != "*"]
    names: list[str] = []
    todo: list[ast.AST] = [statement]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.append(node.id)
        scoped = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
        if not isinstance(
            node, scoped | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
        ):
            todo.extend(ast.iter_child_nodes(node))
    return sorted(set(names))


class _NbgraderStubs(ast.NodeTransformer):
    """Rewrites nbgrader's own stub, a bare `raise NotImplementedError()` (what its
    `generate_assignment` leaves where a solution was), as `raise NotAttempted("name")`, name
    being the enclosing function's: a notebook released by nbgrader itself then gets "not
    attempted yet" too, not a failure. `NotImplementedError` with a message stays an error."""

    def __init__(self) -> None:
        self.functions: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Raise(self, node: ast.Raise) -> ast.AST:
        exc = node.exc
        bare = isinstance(exc, ast.Call) and not exc.args and not exc.keywords
        called = exc.func if bare else exc  # type: ignore[union-attr]
        stub = isinstance(called, ast.Name) and called.id == "NotImplementedError"
        if not stub or node.cause is not None:
            return node
        args = [ast.Constant(self.functions[-1])] if self.functions else []
        return ast.copy_location(ast.Raise(ast.Call(_name(_ERROR), args, [])), node)


class _SkipMissingAnswers(ast.NodeTransformer):
    """Rewrites each top-level statement `s` of a cell as `if running: try: s / except
    NotAttempted: stop`, then `if stopped: names of s = the missing answer`. From the first
    statement that needs a missing answer the cell stops (what follows may need what it would
    have made, even through a mutated list); the names the skipped statements would set stand for
    that answer, so a later cell that needs them is skipped in turn, and one that does not runs.
    A last expression stays a top-level statement, so IPython still shows it."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        node = _NbgraderStubs().visit(node)
        if not node.body or any(
            isinstance(s, ast.ImportFrom) and s.module == "__future__" for s in node.body
        ):
            return node
        cell = _name(_CELL)
        running = ast.Attribute(cell, "running", ast.Load())
        skip = ast.Call(ast.Attribute(cell, "skip", ast.Load()), [_name(_WHY)], [])
        body: list[ast.stmt] = [
            ast.Assign([_name(_CELL, ast.Store())], ast.Call(_name("_maaslab_Skipped"), [], [])),
            ast.Assign([_name(_VALUE, ast.Store())], ast.Constant(None)),
        ]
        for index, statement in enumerate(node.body):
            last = index == len(node.body) - 1 and isinstance(statement, ast.Expr)
            if last:
                statement = ast.Assign([_name(_VALUE, ast.Store())], statement.value)
            handler = ast.ExceptHandler(_name(_ERROR), _WHY, [ast.Expr(skip)])
            body.append(ast.If(running, [ast.Try([statement], [handler], [], [])], []))
            names = [_name(n, ast.Store()) for n in _bound_names(statement) if n != _VALUE]
            if names:
                missing = ast.Attribute(cell, "missing", ast.Load())
                stopped = ast.UnaryOp(ast.Not(), running)
                body.append(ast.If(stopped, [ast.Assign(names, missing)], []))
            if last:
                body.append(ast.Expr(_name(_VALUE)))
        node.body = body
        return ast.fix_missing_locations(node)


def _name(name: str, ctx: ast.expr_context | None = None) -> ast.Name:
    return ast.Name(name, ctx or ast.Load())


def skip_missing_answers(shell: Any, show: Callable[[object], object]) -> None:
    """In a Jupyter kernel: from now on a statement that needs an answer not written yet is
    skipped with the rest of its cell (the names they set stand for that missing answer), and the
    cell shows one ⏳ note instead of a traceback.

    Parameters
    ----------
    shell : the kernel's shell (IPython's `get_ipython()`); None (not in a kernel) changes
        nothing.
    show : how a note is shown (IPython's `display`): the notebook passes both, so this module
        stays free of the notebook's UI.
    """
    if shell is None:
        return
    shell.user_ns.update({_ERROR: NotAttempted, "_maaslab_Skipped": partial(Skipped, show)})
    if not any(isinstance(t, _SkipMissingAnswers) for t in shell.ast_transformers):
        shell.ast_transformers.append(_SkipMissingAnswers())
