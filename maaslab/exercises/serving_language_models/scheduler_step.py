"""Exercise 3: one scheduler step, checked against the engine's own scheduler.

`reference_step` writes the step's rule out, with a flag for each known slip (a prompt that
overtakes the head of the queue, prefills before decodes, no chunking...); when an answer is
wrong, the check names the slip that explains every state it was given.
"""

from __future__ import annotations

from collections.abc import Callable

from maaslab.exercises.grading import CheckResult, call_answer, exercise, failed, passed
from maaslab.exercises.serving_language_models.step_state import (
    STEP_PROBES,
    StepState,
    engine_decision,
    random_states,
)


def reference_step(
    state: StepState,
    *,
    prefill_first: bool = False,
    overtake: bool = False,
    no_chunk: bool = False,
    no_budget: bool = False,
    chunk_blocks: bool = False,
    forget_growth: bool = False,
    no_max_running: bool = False,
    no_admission: bool = False,
    decode_first: bool = False,
) -> dict[str, int]:
    """The step's rule written out (equal to engine_decision); the flags make the known mistakes.

    1. Running sequences, oldest first, while tokens are left: each computes min(pending,
       prefill_chunk, tokens left) and takes the new blocks that needs from the free list.
    2. Waiting sequences, in arrival order, while the batch has room and tokens are left: the
       first one joins if the free list holds blocks for its whole prompt, else nobody joins;
       it computes min(prompt, prefill_chunk, tokens left).
    """
    size = state.block_size
    budget = 10**9 if no_budget else state.max_batched_tokens
    free = state.free_blocks
    chunk = 10**9 if no_chunk else state.prefill_chunk
    out: dict[str, int] = {}

    def run() -> None:
        nonlocal budget, free
        order = state.running
        if decode_first:
            order = tuple(sorted(order, key=lambda r: r.pending > 1))
        for r in order:
            if budget <= 0:
                break
            n = min(r.pending, chunk, budget)
            if not forget_growth:
                free -= max(0, -(-(r.computed + n) // size) - r.blocks)
            out[r.name] = n
            budget -= n

    def admit() -> None:
        nonlocal budget, free
        count = len(state.running)
        for w in state.waiting:
            if (count >= state.max_running and not no_max_running) or budget <= 0:
                break
            n = min(w.prompt, chunk, budget)
            need = -(-(n if chunk_blocks else w.prompt) // size)
            if need > free:
                if overtake:
                    continue
                break
            free -= need
            out[w.name] = n
            budget -= n
            count += 1

    steps = [run] if no_admission else [admit, run] if prefill_first else [run, admit]
    for part in steps:
        part()
    return out


STEP_MISTAKES = (
    (
        "overtake",
        "first come, first served: when the head of the queue does not fit in the free blocks, "
        "nobody behind it joins this step (or a long prompt could wait forever behind short ones)",
    ),
    (
        "prefill_first",
        "the running sequences go first: their tokens come out of the budget before any new "
        "prompt joins, or every arrival would stall the streams already running",
    ),
    (
        "decode_first",
        "running sequences are served oldest first, whatever they are doing: a prefill that "
        "started earlier keeps its place ahead of a later sequence's decode",
    ),
    (
        "no_chunk",
        "a prompt computes at most prefill_chunk tokens per step (chunked prefill), so the "
        "streams beside it keep getting their tokens",
    ),
    ("no_budget", "the step computes at most max_batched_tokens tokens, all sequences together"),
    (
        "chunk_blocks",
        "a sequence joins only if the free list holds blocks for its whole prompt, not just for "
        "this step's chunk (the block manager allocates the prompt at admission)",
    ),
    (
        "forget_growth",
        "a running sequence whose next tokens cross into a new block takes that block from the "
        "free list first: subtract it before admitting anyone",
    ),
    ("no_max_running", "no more than max_running sequences run at once"),
    (
        "no_admission",
        "waiting sequences join in this same step when there is room, tokens and blocks: "
        "that is continuous batching",
    ),
)


def _as_decision(got: object) -> dict[str, int] | None:
    # {name: tokens} from a dict or a list of (name, tokens) pairs; zero entries dropped
    try:
        pairs = got.items() if isinstance(got, dict) else list(got)  # type: ignore[union-attr]
        return {str(k): int(v) for k, v in pairs if int(v) != 0}
    except (TypeError, ValueError):
        return None


@exercise
def check_schedule_step(fn: Callable) -> CheckResult:
    """Check `fn(state: StepState) -> {name: tokens}` against the engine's own scheduler."""
    name = "one scheduler step"
    answers: list[tuple[StepState, dict[str, int]]] = []
    for state in (*STEP_PROBES, *random_states(40)):
        got, bad = call_answer(name, fn, state)
        if bad is not None:
            return bad
        decision = _as_decision(got)
        if decision is None:
            return failed(name, "return a dict {name: tokens this step}, e.g. {'A': 1, 'D': 31}")
        answers.append((state, decision))
    for state, decision in answers:
        want = engine_decision(state)
        if decision == want:
            continue
        where = f"in the state\n{state}\nyou scheduled {decision}, the engine {want}"
        # Several slips can give the same wrong step; name the one that explains every answer.
        here = [(f, w) for f, w in STEP_MISTAKES if reference_step(state, **{f: True}) == decision]
        for flag, why in here:
            if all(reference_step(s, **{flag: True}) == d for s, d in answers):
                return failed(name, f"{where}: {why}")
        if here:
            return failed(name, f"{where}: {here[0][1]}")
        return failed(
            name,
            f"{where}. Hint: running sequences first (min(pending, chunk, tokens left)), then "
            "waiting ones in order while one fits (blocks for its whole prompt)",
        )
    return passed(
        name,
        "the same decisions as maaslab.llm.scheduler on every state: decodes and running "
        "prefills first, then first come first served, in chunks, within the budget",
    )
