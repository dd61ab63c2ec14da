"""The Inference page's chat through AppTest, on a tiny random Llama saved as assets/models'
mini-llama (mini-llama's special tokens and chat template; a 256-token context): answers are the
engine's own tokens decoded, the conversation is trimmed to fit, Clear empties it, bad input gets
a message, and a mini-llama not built yet is said so."""

import re
import sys
from pathlib import Path

import pytest
import streamlit as st

from maaslab import zoo
from maaslab.llm.engine import LLMEngine
from maaslab.llm.sequence import SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from test_server_llm import save_tiny

CHAT = "infer.chat"
QUESTION = "What does len do?"
ANSWER_LINE = re.compile(
    r"(\d+) new tokens after a (\d+)-token prompt · \d+ tokens/s · first token after \d+ ms · "
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models folder holding only a tiny mini-llama."""
    root = tmp_path_factory.mktemp("models")
    save_tiny(root / "mini-llama", "llama")
    return root


@pytest.fixture(scope="module")
def engine(models) -> LLMEngine:
    """The same model through the engine alone: the oracle for the page's answers."""
    return LLMEngine.from_folder(models / "mini-llama")


@pytest.fixture
def chat(open_page, models, monkeypatch):
    """The Inference page on mini-llama, loaded from the tiny folder; the page's model cache is
    emptied before and after, so no other test sees this mini-llama (nor this one theirs)."""
    monkeypatch.setattr(zoo, "MODELS_DIR", models)
    st.cache_resource.clear()
    yield open_page("inference", model="mini-llama")
    st.cache_resource.clear()


def settings(at, temperature=0.0, max_tokens=24, seed=0, top_p=0.9):
    at.slider(key="infer.chat_temperature").set_value(temperature)
    at.slider(key="infer.chat_top_p").set_value(top_p)
    at.number_input(key="infer.chat_max_tokens.256").set_value(max_tokens)
    at.number_input(key="infer.chat_seed").set_value(seed)
    return at.run()


def send(at, text: str):
    at.chat_input(key="infer.chat_input").set_value(text).run()
    assert not at.exception, at.exception
    return at


def expected(models, engine, messages, params) -> str:
    """What the engine answers to `messages` under mini-llama's chat template, decoded."""
    model = zoo.ChatModel("mini-llama", models / "mini-llama")
    (tokens,) = engine.generate([model.chat_ids(messages)], params)
    return model.tokenizer.decode(tokens, skip_special_tokens=True)


def shown(at) -> list[tuple[str, str]]:
    """(role, first Markdown) of every chat message, unescaped back to plain text."""
    out = []
    for message in at.chat_message:
        text = message.markdown[0].value if message.markdown else ""
        text = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text.replace("\u2060", ""))
        out.append((message.name, text.replace("  \n", "\n").replace("\u00a0", " ")))
    return out


def test_greedy_answers_are_the_engines_tokens_and_the_chat_goes_on(
    chat, page_text, models, engine
):
    at = settings(chat)
    assert "Type a message below" in page_text(at) and at.button(key="infer.chat_clear").disabled
    send(at, QUESTION)
    greedy = SamplingParams(max_tokens=24, temperature=0)
    first = expected(models, engine, [{"role": "user", "content": QUESTION}], greedy)
    assert [m["content"] for m in at.session_state[CHAT]] == [QUESTION, first]
    assert shown(at) == [("user", QUESTION), ("assistant", first)]
    line = ANSWER_LINE.search(page_text(at))
    assert line and line.group(1) == "24" and "stopped at the token limit" in page_text(at)

    send(at, "And what does *args mean?")  # the second answer reads the whole conversation
    second = expected(models, engine, at.session_state[CHAT][:3], greedy)
    assert at.session_state[CHAT][-1]["content"] == second and len(shown(at)) == 4
    assert shown(at)[2] == ("user", "And what does *args mean?")  # shown as typed
    assert int(ANSWER_LINE.search(page_text(at)).group(2)) > int(line.group(2))

    at.number_input(key="infer.chat_seed").set_value(5).run()  # a rerun keeps the chat
    assert [text for _, text in shown(at)] == [m["content"] for m in at.session_state[CHAT]]
    assert len(ANSWER_LINE.findall(page_text(at))) == 1 and not at.exception


def test_sampled_answers_follow_temperature_top_p_and_seed(chat, models, engine):
    at = settings(chat, temperature=0.9, top_p=0.8, seed=11)
    send(at, QUESTION)
    params = SamplingParams(max_tokens=24, temperature=0.9, top_p=0.8, seed=11)
    messages = [{"role": "user", "content": QUESTION}]
    assert at.session_state[CHAT][-1]["content"] == expected(models, engine, messages, params)


def test_clear_empties_the_history(chat, page_text):
    at = send(settings(chat), QUESTION)
    assert len(at.session_state[CHAT]) == 2
    at.button(key="infer.chat_clear").click().run()
    assert at.session_state[CHAT] == [] and not at.chat_message
    assert "Type a message below" in page_text(at) and not ANSWER_LINE.search(page_text(at))


def test_a_long_conversation_loses_its_oldest_exchanges_with_a_note(
    chat, page_text, models, engine
):
    at = settings(chat, max_tokens=60)
    long = "The quick brown fox jumps over the lazy dog. " * 6  # about 70 tokens
    for _ in range(3):
        send(at, long)
    note = re.search(r"The (\d+ )?oldest exchanges? (?:was|were) left out", page_text(at))
    dropped = int(note[1] or 1)
    prompt = int(ANSWER_LINE.search(page_text(at)).group(2))
    assert dropped >= 1 and prompt + 60 <= 256 and len(shown(at)) == 6  # all still shown
    history = at.session_state[CHAT]
    greedy = SamplingParams(max_tokens=60, temperature=0)
    assert history[5]["content"] == expected(models, engine, history[2 * dropped : 5], greedy)


def test_bad_messages_get_a_message_and_nothing_is_sent(chat, page_text):
    at = send(settings(chat), "  \n ")
    assert "The message is empty" in page_text(at) and at.session_state[CHAT] == []
    send(at, "brown fox " * 300)
    assert "Not sent: this message is" in page_text(at) and "shorten the message" in page_text(at)
    assert at.session_state[CHAT] == []
    at = settings(at, max_tokens=255)  # a message of ~40 tokens leaves fewer than 255
    send(at, "The quick brown fox jumps over the lazy dog. " * 3)
    assert "The answer was limited to" in page_text(at) and len(at.session_state[CHAT]) == 2


def test_a_missing_mini_llama_says_how_to_build_it(open_page, page_text, tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path)
    at = open_page("inference", model="mini-llama")
    text = page_text(at)
    assert "mini-llama is not built yet" in text and "python -m maaslab assets mini-llama" in text
    assert not at.exception and not at.chat_message
