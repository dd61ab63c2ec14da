"""The Inference page's chat with a language model (a zoo ChatModel such as mini-llama): the
conversation, its sampling settings, and each answer streamed as lesson 15's engine samples it.

Every answer runs on an LLMEngine made for it over the loaded model's weights: its KV pool holds
one context (for mini-llama about 1.6 MB, allocated in well under a millisecond), so sessions
never share engine state, and an answer stopped half-way (the Stop button, a rerun) leaves
nothing behind in an engine that another session steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import streamlit as st

from maaslab.errors import MaaslabError
from maaslab.llm.engine import EngineConfig, LLMEngine
from maaslab.llm.measure import Timing
from maaslab.llm.model import PagedModel
from maaslab.llm.sequence import SamplingParams
from maaslab.runtime import torch_threads
from panels.inference import REDRAW_S

ss = st.session_state
CHAT, LAST = "infer.chat", "infer.chat_last"  # the messages; the last answer's numbers
BLOCK = 16  # token slots per KV block of the engine
EXAMPLE = "What does json.dumps do?"
ENDINGS = {
    "stop": "the model ended its turn",
    "length": "stopped at the token limit",
    None: "stopped before its end",
}


@dataclass
class Answer:
    """One answer as it streams: its text, when each token came, why it ended, what was cut."""

    text: str = ""
    timing: Timing | None = None
    finish: str | None = None  # "stop", "length"; None while running or when interrupted
    dropped: int = 0  # oldest exchanges left out so the answer fits the context
    capped: int | None = None  # max new tokens when the context left fewer than asked

    def line(self, model) -> str:
        """Tokens, speed, time to first token and how it ended, in one caption."""
        t = self.timing
        if t is None or not t.token_times:
            return f"No tokens: {ENDINGS[self.finish]}"
        n = len(t.token_times)
        speed = f" · {1 / t.tpot:.0f} tokens/s" if n > 1 and t.tpot > 0 else ""
        return (
            f"{n} new tokens after a {t.prompt_tokens}-token prompt{speed} · first token after "
            f"{t.ttft * 1000:.0f} ms · {ENDINGS[self.finish]} · device {model.device}"
        )


def plain(text: str, before: str = "") -> str:
    """Markdown that shows `text` as written when it follows `before` (the text shown so far):
    line breaks and indentation kept, nothing read as formatting (docstrings are full of
    `*args`, `__init__` and `>>>`).

    Each character is escaped knowing only what precedes it, so pieces escaped one by one as
    they stream join into the escape of the whole text.
    """
    indent = not before.rpartition("\n")[2].strip(" \t")  # only blanks so far on this line
    prev, out = before[-1:], []
    for char in text:
        if char == "\n":
            out.append("  \n")  # a hard line break
        elif char in " \t" and indent:
            out.append("\u00a0" * (4 if char == "\t" else 1))  # indentation that stays
        elif char.isascii() and not char.isalnum() and not char.isspace():
            out.append("\\" + char)  # CommonMark: any escaped ASCII punctuation is literal
        elif char == "m" and prev == ":":
            out.append("\u2060m")  # Streamlit expands :material/ icons even when escaped
        else:
            out.append(char)
        indent = char == "\n" or (indent and char in " \t")
        prev = char
    return "".join(out)


def fit_chat(model, messages: list[dict[str, str]], max_new: int) -> tuple[list[int], int, int]:
    """The prompt for `messages` (ending with the user's): the model's chat template over the
    last exchanges that leave room for `max_new` tokens in its context.

    Returns (prompt ids, oldest user/assistant exchanges left out, new tokens allowed): fewer
    than `max_new` when the last message alone leaves less room. MaaslabError when it leaves
    none.
    """
    dropped = 0
    while True:
        ids = model.chat_ids(messages[2 * dropped :])
        if len(ids) + max_new <= model.context or 2 * dropped == len(messages) - 1:
            break
        dropped += 1
    room = model.context - len(ids)
    if room < 1:
        raise MaaslabError(
            f"this message is {len(ids)} tokens with the chat template, and {model.name} reads "
            f"{model.context} tokens in all, its answer included: shorten the message"
        )
    return ids, dropped, min(max_new, room)


def stream_answer(model, prompt: list[int], params: SamplingParams, answer: Answer) -> Iterator:
    """Step a new engine over one request; yield the answer's text (as Markdown, `plain`) as it
    is sampled, at most every REDRAW_S, recording its text and timing in `answer`."""
    answer.timing = Timing(time.perf_counter(), len(prompt))
    config = EngineConfig(block_size=BLOCK, num_blocks=-(-model.context // BLOCK))
    engine = LLMEngine(PagedModel(model.model), config, model.eos_token_ids)
    engine.add_request(prompt, params)
    decoder = model.decoder()
    pending, shown = "", 0.0
    # One thread: a batch of one is too small to share, and a second thread waits for a busy
    # core at every op (maaslab.runtime.torch_threads; the Engine view steps the same way).
    threads = 1 if model.device.type == "cpu" else None
    while engine.has_work:
        with torch_threads(threads):
            outs = engine.step()
        for out in outs:
            answer.timing.token_times.append(time.perf_counter())
            answer.finish = out.finish_reason
            pending += decoder.push(out.token)
        if not engine.has_work:
            pending += decoder.flush()
        if pending and (time.perf_counter() - shown >= REDRAW_S or not engine.has_work):
            before, answer.text = answer.text, answer.text + pending
            yield plain(pending, before)
            pending, shown = "", time.perf_counter()


def clear_chat() -> None:
    """Forget the conversation and the last answer's numbers."""
    ss.pop(CHAT, None)
    ss.pop(LAST, None)


def show_message(message: dict[str, str]) -> None:
    """One turn of the conversation, as written."""
    if message["content"]:
        st.markdown(plain(message["content"]))
    else:
        st.caption("(no text)")


def answer_notes(model, answer: Answer, asked: int) -> None:
    """Say what was cut to fit the context, then the answer's numbers."""
    if answer.dropped:
        cut = (
            "The oldest exchange was"
            if answer.dropped == 1
            else f"The {answer.dropped} oldest exchanges were"
        )
        st.caption(
            f":material/content_cut: {cut} left out, so that the conversation and {asked} new "
            f"tokens fit in the model's {model.context}-token context."
        )
    if answer.capped is not None:
        st.caption(
            f":material/content_cut: The answer was limited to {answer.capped} tokens: that "
            "is what the context had left."
        )
    st.caption(answer.line(model))


def chat_panel(model) -> None:
    """Settings, the conversation so far, and the next message's answer streamed in."""
    # In the main area the input is pinned to the bottom of the page wherever it is called.
    message = st.chat_input(
        f"Message {model.name}", key="infer.chat_input", max_chars=20_000, submit_mode="stop"
    )
    c1, c2, c3, c4, c5 = st.columns([3, 3, 2, 2, 2], vertical_alignment="bottom")
    temperature = c1.slider(
        "Temperature (0 = greedy)", 0.0, 2.0, 0.7, 0.05, key="infer.chat_temperature"
    )
    top_p = c2.slider("Top-p", 0.05, 1.0, 0.9, 0.05, key="infer.chat_top_p")
    max_new = c3.number_input(
        f"Max new tokens (1–{model.context - 1})",
        1,
        model.context - 1,
        min(256, model.context // 2),
        key=f"infer.chat_max_tokens.{model.context}",
    )
    seed = c4.number_input("Seed", 0, 2**31 - 1, 0, key="infer.chat_seed")
    history: list[dict[str, str]] = ss.setdefault(CHAT, [])
    c5.button(
        "Clear chat",
        icon=":material/delete_sweep:",
        key="infer.chat_clear",
        on_click=clear_chat,
        disabled=not history and message is None,
        width="stretch",
    )
    request, problem = None, None
    if message is not None and not message.strip():
        problem = "The message is empty: type a question first."
    elif message is not None:
        try:
            request = (*fit_chat(model, [*history, user(message)], int(max_new)), int(max_new))
        except MaaslabError as err:
            problem = f"Not sent: {err}."
    last = ss.get(LAST) if request is None else None  # a new answer replaces its numbers
    for i, turn in enumerate(history):
        with st.chat_message(turn["role"]):
            show_message(turn)
            if last is not None and i == len(history) - 1 and turn["role"] == "assistant":
                answer_notes(model, *last)
    if problem:
        st.warning(problem, icon=":material/edit:")
    elif request is not None:
        respond(model, history, user(message), request, temperature, top_p, seed)
    elif not history:
        st.info(
            f"Type a message below, for example “{EXAMPLE}”: the answer appears token by "
            "token as the engine samples it. Each answer reads the whole conversation "
            f"through {model.name}'s chat template."
        )


def user(text: str) -> dict[str, str]:
    """A user's turn."""
    return {"role": "user", "content": text}


def respond(model, history, turn, request, temperature, top_p, seed) -> None:
    """Add `turn` to `history` and stream the answer in; keep it (all of it, or what came
    before Stop or a rerun ended the script) and its numbers."""
    prompt, dropped, allowed, asked = request
    params = SamplingParams(
        max_tokens=allowed, temperature=float(temperature), top_p=float(top_p), seed=int(seed)
    )
    history.append(turn)
    with st.chat_message("user"):
        show_message(turn)
    answer = Answer(dropped=dropped, capped=allowed if allowed < asked else None)
    with st.chat_message("assistant"):
        try:
            st.write_stream(stream_answer(model, prompt, params, answer), cursor="▌")
        finally:
            history.append({"role": "assistant", "content": answer.text})
            ss[LAST] = (answer, asked)
        answer_notes(model, answer, asked)
