"""The subword corpus and tokenizer: a corpus every process builds the same, held-out documents
apart from training ones, a byte-level BPE that round-trips any text, and the chat template the
module docstring shows."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from maaslab import subwords
from maaslab.errors import MaaslabError
from maaslab.models.llama import LlamaSpec
from maaslab.subwords import (
    BOS,
    EOS,
    SPECIAL_TOKENS,
    TURN_END,
    Document,
    corpus_digest,
    encode_documents,
    load_documents,
    render,
    split_documents,
    train_tokenizer,
    unigram_perplexity,
    window_dataset,
)


@pytest.fixture(scope="module")
def docs():
    return load_documents()


@pytest.fixture(scope="module")
def tok(docs):
    # A small vocabulary trained on the help topics: seconds less than the shipped 4096.
    return train_tokenizer([d.text for d in docs if d.name.startswith("help:")], 512)


def test_the_corpus_is_the_same_in_a_fresh_process(docs):
    """Another interpreter, with another string-hash seed, builds the very same documents."""
    script = "from maaslab.subwords import *; print(corpus_digest(load_documents()))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == corpus_digest(docs)


def test_the_corpus_has_all_three_sources_each_text_once(docs):
    kinds = {d.name.split(":")[0] for d in docs}
    assert kinds == {"help", "doc", "review"}
    assert len({d.name for d in docs}) == len({d.text for d in docs}) == len(docs) > 5000
    assert not any("/test" in d.name or "site-packages" in d.name for d in docs)


def test_heldout_documents_are_a_tenth_and_apart_from_training(docs):
    training, heldout = split_documents(docs)
    assert len(training) + len(heldout) == len(docs)
    assert 0.07 < len(heldout) / len(docs) < 0.13
    assert not {d.name for d in training} & {d.name for d in heldout}
    assert not {d.text for d in training} & {d.text for d in heldout}
    # the part a document falls in is a property of its name alone
    assert Document(heldout[0].name, "any text").heldout
    assert not Document(training[0].name, "any text").heldout


def test_a_docstring_is_a_question_about_its_name():
    assert Document("doc:json/decoder.py:JSONDecoder.decode", "x").question == (
        "What does json.decoder.JSONDecoder.decode do?"
    )
    assert Document("doc:json/__init__.py:<module>", "x").question == (
        "What is the json module for?"
    )
    assert Document("help:for", "x").question is None
    assert Document("review:3", "x").question is None


def test_special_tokens_are_single_ids_in_order(tok):
    for expected, token in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(token) == expected
        assert tok(f"a{token}b", add_special_tokens=False)["input_ids"][1] == expected
    spec = LlamaSpec()  # the model's defaults name the same ids
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
        spec.bos_token_id,
        spec.eos_token_id,
        spec.pad_token_id,
    )


@pytest.mark.parametrize(
    "text",
    [
        "for x in range(3):\n\tprint(x)  # comment",
        "naïve café, 漢字, Ελληνικά, emoji 🙂🚀, a zero\x00byte",
        "  leading and trailing spaces  \n\n",
    ],
)
def test_any_text_round_trips_byte_level(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok(text)["input_ids"] == [tok.bos_token_id, *ids]  # encoding starts a text


def test_characters_never_seen_in_training_still_round_trip(tok, docs):
    help_text = "".join(d.text for d in docs if d.name.startswith("help:"))
    unseen = "漢字🙂ж"
    assert not set(unseen) & set(help_text)
    ids = tok(unseen, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id is None and tok.decode(ids) == unseen
    assert len(ids) == len(unseen.encode("utf-8"))  # no merges learned: one id per byte


def test_bpe_merges_frequent_words(tok):
    assert len(tok("the statement", add_special_tokens=False)["input_ids"]) <= 4


def test_the_chat_template_renders_what_the_docstring_shows(tok):
    block = textwrap.dedent(subwords.__doc__.split("template renders\n\n")[1].split("\n\n")[0])
    shown = "\n".join(block.splitlines()[:-1]) + "\n"  # the last line says what follows
    chat = [{"role": "user", "content": "What does len do?"}]
    rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered == shown == f"{BOS}<|user|>\nWhat does len do?{TURN_END}\n<|assistant|>\n"
    ids = tok.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
    assert ids == tok(rendered, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1


def test_documents_are_rendered_as_texts_and_chats_then_ended(tok):
    doc = Document("doc:json/__init__.py:dumps", "Serialize obj to a JSON formatted str.")
    help_doc = Document("help:for", "The for statement iterates.")
    assert render(tok, help_doc) == BOS + help_doc.text
    assert render(tok, doc) == tok.apply_chat_template(
        [
            {"role": "user", "content": "What does json.dumps do?"},
            {"role": "assistant", "content": doc.text},
        ],
        tokenize=False,
    )
    ids = encode_documents(tok, [help_doc, doc])
    assert ids.count(tok.eos_token_id) == 2 and ids[-1] == tok.eos_token_id
    assert ids.count(tok.bos_token_id) == 2 and ids[0] == tok.bos_token_id
    text = tok.decode(ids)
    assert text.startswith(BOS + help_doc.text + EOS + BOS + "<|user|>\n")
    assert text.endswith(doc.text + TURN_END + "\n" + EOS)


def test_vocabulary_too_small_is_refused():
    with pytest.raises(MaaslabError, match="too small"):
        train_tokenizer(["some text"], 256)


def test_windows_do_not_overlap_and_targets_are_shifted_by_one():
    train_ids, heldout_ids = list(range(100)), list(range(1000, 1030))
    data = window_dataset(train_ids, heldout_ids, context=8)
    # the last tenth of the training stream (ids 90-99) is the validation stream
    assert data.task == "language_model" and data.X_train.shape == (11, 8)
    assert data.X_test.shape == (3, 8) and data.X_val.shape == (1, 8)
    np.testing.assert_array_equal(data.X_val[0], np.arange(90, 98))
    np.testing.assert_array_equal(data.X_train[1], np.arange(8, 16))
    np.testing.assert_array_equal(data.y_train[1], np.arange(9, 17))
    assert data.X_test.min() >= 1000  # held-out windows come from the held-out stream only
    assert len(window_dataset(train_ids, heldout_ids, 8, max_windows=5).X_train) == 5
    with pytest.raises(MaaslabError, match="longer than"):
        window_dataset(train_ids, heldout_ids, context=30)


def test_unigram_perplexity_is_the_exp_of_the_cross_entropy():
    # Frequencies (add-one) of 0,0,0,1 over a vocabulary of 3: p = 4/7, 2/7, 1/7.
    p = np.array([4, 2, 1]) / 7
    targets = np.array([0, 1, 2, 0])
    expected = math.exp(-np.log(p[targets]).mean())
    assert unigram_perplexity([0, 0, 0, 1], targets, 3) == pytest.approx(expected)
    # uniform frequencies: perplexity is the vocabulary size
    assert unigram_perplexity(list(range(10)) * 5, np.arange(10), 10) == pytest.approx(10)
