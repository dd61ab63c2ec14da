"""An answer not written yet: what the student edition of a notebook runs with.

`python -m maaslab classroom student OUT` (see `maaslab.classroom`) replaces each solution region
of the notebooks with a stub. Inside a function the stub is `raise NotAttempted("name")`; for an
answer that is a value it is `name = Unanswered("name")`, a value whose every use raises
`NotAttempted`. A check decorated with `maaslab.exercises.grading.exercise` turns either into a
"not attempted yet" verdict. Any other cell that reaches such an answer (a comparison with the
library, a plot of your function) stops with a short note instead of a traceback once
`stop_cells_at_missing_answers()` has run in the kernel; the student edition runs it first.

`NotAttempted` derives from BaseException, like KeyboardInterrupt: the checks and the learner's
own code catch `Exception` to turn a wrong answer into a verdict, and a missing answer must pass
through them to the check's decorator (or to the cell) to be told apart from a wrong one.
"""

from __future__ import annotations

import ast

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
    """The note a cell shows when it stopped at an answer not written yet."""

    def __init__(self, why: NotAttempted) -> None:
        self.message = f"⏳ skipped the rest of this cell: {why}"

    def __repr__(self) -> str:
        return self.message

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict:
        return {"text/plain": self.message, SKIPPED_MIME: {"message": str(self.message)}}


# Names the rewritten cells use; long enough not to meet a learner's own names.
_ERROR, _NOTE, _VALUE = "_maaslab_NotAttempted", "_maaslab_Skipped", "_maaslab_value"


class _StopAtMissingAnswer(ast.NodeTransformer):
    """Rewrites a cell `body; last` as `try: body; v = last / except NotAttempted: v = note`,
    then `v`: the cell stops at the first missing answer, and its last value is still shown
    (IPython displays a top-level expression statement at the end of a cell)."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        if not node.body or any(
            isinstance(s, ast.ImportFrom) and s.module == "__future__" for s in node.body
        ):
            return node
        body, last = node.body, node.body[-1]
        store = ast.Name(_VALUE, ast.Store())
        if isinstance(last, ast.Expr):
            body = [*body[:-1], ast.Assign([store], last.value)]
        handler = ast.ExceptHandler(
            ast.Name(_ERROR, ast.Load()),
            "_maaslab_why",
            [
                ast.Assign(
                    [store],
                    ast.Call(
                        ast.Name(_NOTE, ast.Load()), [ast.Name("_maaslab_why", ast.Load())], []
                    ),
                )
            ],
        )
        node.body = [
            ast.Assign([store], ast.Constant(None)),
            ast.Try(body, [handler], [], []),
            ast.Expr(ast.Name(_VALUE, ast.Load())),
        ]
        return ast.fix_missing_locations(node)


def stop_cells_at_missing_answers() -> bool:
    """In a Jupyter kernel: from now on a cell that reaches an answer not written yet stops with
    a ⏳ note instead of a traceback. Returns False outside IPython (nothing to change)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.user_ns.update({_ERROR: NotAttempted, _NOTE: Skipped})
    if not any(isinstance(t, _StopAtMissingAnswer) for t in shell.ast_transformers):
        shell.ast_transformers.append(_StopAtMissingAnswer())
    return True
