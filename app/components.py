"""Page parts that several pages share: warnings about a shared link, the model picker, the task
watcher, the per-session slot, and the cached test digits. A page imports these (`from components
import ...`; the router's folder is on the path while a page runs) instead of pasting its own
copy."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from maaslab.data import DIGIT_PIXEL_MAX, load_dataset
from maaslab.jobs import Task
from maaslab.urlstate import clipped, quoted

_LOGGER = logging.getLogger(__name__)

ss = st.session_state


# --- text from a link ------------------------------------------------------------------------

MESSAGE_CHARS = 300  # a warning line longer than this is cut
MESSAGES_SHOWN = 20  # warning lines shown (a Studio link has 15 settings); the rest are counted


def literal(text: str, limit: int = MESSAGE_CHARS) -> str:
    """Markdown that shows `text` as it is, for text that anyone can write (a link's values).

    Streamlit's Markdown turns `[a](url)` and bare URLs into links, `![a](url)` into an image the
    browser fetches, and also reads `:red[...]`, `:material/...:` icons and `$...$` LaTeX;
    backslash escapes stop some of these but not the ones Streamlit finds in the rendered text
    (bare URLs, icons). A code span stops them all: its content is shown character for character.
    """
    text = clipped(" ".join(text.split()), limit)  # one line: a blank line would end the span
    if not text:
        return ""
    # Streamlit rewrites ":material/" in the whole source, code spans included; a word joiner
    # (invisible) keeps the text as written.
    text = text.replace(":material/", ":\u2060material/")
    fence = "`" * (1 + max(map(len, re.findall("`+", text)), default=0))
    return f"{fence} {text} {fence}"  # the spaces let the text begin or end with a backtick


def link_warning(messages: Sequence[str]) -> None:
    """One warning listing what a shared link carried that the page did not use (none: nothing).

    Parameters
    ----------
    messages : one line per ignored value, as maaslab.urlstate and lab_state write them; each is
        shown as plain text (`literal`), cut to MESSAGE_CHARS, and at most MESSAGES_SHOWN lines.
    """
    if not messages:
        return
    lines = [f"- {literal(m)}" for m in messages[:MESSAGES_SHOWN]]
    if len(messages) > MESSAGES_SHOWN:
        lines.append(f"- and {len(messages) - MESSAGES_SHOWN} more")
    body = "Some settings in this link were ignored:\n" + "\n".join(lines)
    st.warning(body, icon=":material/link_off:")


# --- the model picker ------------------------------------------------------------------------


def pick_model(names: Sequence[str], key: str, *, default: str | None = None) -> str:
    """A "Model" selectbox kept in the URL (?model=...), so a link opens the page on one model;
    a name it does not offer is refused with a warning, until another model is picked.

    Parameters
    ----------
    names : the models offered.
    key : the page's session_state key for the choice, e.g. "infer.model".
    default : the first choice when the URL names none (None: the first of `names`).
    """
    ignored = f"{key}.ignored"  # the warning about the link's model, while it applies
    if key not in ss:
        asked = st.query_params.get("model")
        if asked in names:
            ss[key] = asked
        else:
            if default is not None:
                ss[key] = default
            if asked is not None:
                ss[ignored] = [
                    f"ignored model={quoted(asked)} from the URL (choose from "
                    f"{', '.join(names)}); using {default or names[0]}"
                ]
    name = st.selectbox("Model", list(names), key=key, on_change=ss.pop, args=(ignored, None))
    link_warning(ss.get(ignored, []))
    st.query_params["model"] = name
    return name


@st.cache_data(show_spinner=False)
def digits_test(pixel_scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The digits test split and its labels: pixels on sklearn's 0..16 scale (what predict and
    the server take), or with pixel_scale=False on 0..1 (what the networks read)."""
    data = load_dataset("digits", seed=0)
    return (data.X_test * DIGIT_PIXEL_MAX if pixel_scale else data.X_test), data.y_test


# --- the task watcher ------------------------------------------------------------------------


def show_note(note: tuple[str, str] | None) -> None:
    """A ("error" | "info", text) note: its first line as an error or info box, and the rest (a
    server's own output, say) as a code block under it."""
    if note is None:
        return
    level, text = note
    first, _, rest = text.partition("\n")
    (st.error if level == "error" else st.info)(first)
    if rest.strip():
        st.code(rest.strip(), language=None)


def watch_task(
    find: Callable[[], Task | None],
    finish: Callable[[Task], None],
    *,
    cancel_key: str,
    every: float = 0.5,
    status: Callable[[Task], None] | None = None,
    cancel: Callable[[Task], None] | None = None,
) -> None:
    """Poll a background Task every `every` seconds: its progress and a Cancel button while it
    runs; once it ends, `finish(task)` keeps its outcome and the whole page reruns.

    Parameters
    ----------
    find : the task to watch now (None: nothing runs, nothing is shown).
    finish : called once with the ended task (read task.error / task.result there).
    cancel_key : the Cancel button's key, e.g. "compress.cancel".
    every : seconds between polls.
    status : shows the running task (default: a progress bar with its stage).
    cancel : what Cancel does (default: task.cancel(); the task then ends and `finish` runs).
    """

    @st.fragment(run_every=every)
    def poll() -> None:
        task = find()
        if task is None:
            return
        if task.running:
            if status is not None:
                status(task)
            else:
                st.progress(task.fraction, text=f"{task.stage} · {task.fraction:.0%}")
            if st.button("Cancel", icon=":material/stop:", key=cancel_key):
                (cancel or Task.cancel)(task)
            return
        finish(task)
        st.rerun()

    poll()


def keep_outcome(task_key: str, result_key: str, error_key: str) -> Callable[[Task], None]:
    """A `finish` for watch_task when the task sits in session_state under `task_key`: the
    result goes to `result_key`, an error message to `error_key`."""

    def finish(task: Task) -> None:
        ss.pop(task_key, None)
        if task.error:
            ss[error_key] = task.error
        else:
            ss[result_key] = task.result

    return finish


# --- the per-session slot --------------------------------------------------------------------


class Stoppable(Protocol):
    def stop(self) -> Any: ...


S = TypeVar("S", bound=Stoppable)


class _Registry:
    """Every session's slots (page, session id) -> slot, and the lock the sessions' script
    threads take to read and change them."""

    def __init__(self) -> None:
        self.slots: dict[tuple[str, str], Stoppable] = {}
        self.lock = threading.Lock()


@st.cache_resource
def _registry() -> _Registry:
    """One registry for the app's lifetime, so what the slots hold outlives reruns."""
    return _Registry()


def _stop_gone(slots: list[Stoppable]) -> None:
    """Stop the slots of sessions that have gone; a failure is logged, never raised: it must
    not break the session that happened to notice them (a CI run's page crashed on one)."""
    for slot in slots:
        try:
            slot.stop()
        except Exception:
            _LOGGER.exception("stopping the slot of a closed session failed")


def session_slot(page: str, make: Callable[[], S]) -> S:
    """This browser session's slot for `page` (made by `make` the first time): a place for
    processes and threads that must outlive a rerun. The slots of sessions that have gone (a
    tab closed or disconnected) are stopped, on a thread of their own, so nothing runs on
    unseen and this session does not wait for a server's drain."""
    from streamlit.runtime import Runtime

    registry = _registry()
    key = (page, get_script_run_ctx().session_id)
    gone: list[Stoppable] = []
    with registry.lock:
        if Runtime.exists():  # under `streamlit run` (AppTest has no runtime)
            runtime = Runtime.instance()
            ended = [k for k in registry.slots if not runtime.is_active_session(k[1])]
            gone = [registry.slots.pop(k) for k in ended if k != key]
        slot = registry.slots.get(key)
        if slot is None:
            slot = registry.slots[key] = make()
    if gone:
        threading.Thread(target=_stop_gone, args=(gone,), name="stop-gone-slots").start()
    return slot  # type: ignore[return-value]
