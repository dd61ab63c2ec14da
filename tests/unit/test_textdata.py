"""The help-text corpus, the character tokenizer and the next-character windows."""

import numpy as np
import pytest

from maaslab.errors import MaaslabError
from maaslab.textdata import UNKNOWN, CharTokenizer, load_corpus, load_text_dataset


def test_corpus_is_cpythons_help_topics_in_sorted_order():
    from pydoc_data.topics import topics

    text = load_corpus()
    assert len(text) > 100_000 and text.startswith(topics[min(topics)])
    assert len(set(text)) > 60 and UNKNOWN not in text


def test_tokenizer_round_trips_and_maps_unknown_characters():
    text = load_corpus()
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text)) + 1 and tok.chars[-1] == UNKNOWN
    assert list(tok.chars[:-1]) == sorted(set(text))
    sample = text[5000:7000]
    ids = tok.encode(sample)
    assert max(ids) < tok.unknown_id and tok.decode(ids) == sample
    # a character the corpus never uses becomes the unknown id instead of failing
    assert tok.encode("a\u4e2db") == [tok.encode("a")[0], tok.unknown_id, tok.encode("b")[0]]
    assert CharTokenizer.from_dict(tok.to_dict()) == tok


def test_tokenizer_refuses_a_broken_description():
    with pytest.raises(MaaslabError, match="character tokenizer"):
        CharTokenizer.from_dict({"type": "bpe"})
    with pytest.raises(MaaslabError, match="unknown marker"):
        CharTokenizer("abc")


def test_windows_are_targets_shifted_by_one(monkeypatch):
    monkeypatch.delenv("MAASLAB_FAST", raising=False)  # every window, not fast mode's subset
    data = load_text_dataset(context=32, stride=8)
    assert data.task == "language_model"
    assert data.X_train.dtype == np.int64 and data.X_train.shape[1] == 32
    assert data.y_train.shape == data.X_train.shape
    np.testing.assert_array_equal(data.X_train[:, 1:], data.y_train[:, :-1])
    np.testing.assert_array_equal(data.X_test[:, 1:], data.y_test[:, :-1])
    # consecutive windows start `stride` characters apart
    np.testing.assert_array_equal(data.X_train[1, :24], data.X_train[0, 8:])
    tok = CharTokenizer.from_dict(data.meta["tokenizer"])
    text = load_corpus()
    assert tok.decode(data.X_train[0]) == text[:32] and tok.decode(data.y_train[0]) == text[1:33]
    assert data.n_classes == tok.vocab_size  # one logit per token


def test_train_and_test_text_do_not_overlap(monkeypatch):
    monkeypatch.delenv("MAASLAB_FAST", raising=False)
    data = load_text_dataset(context=64, test_fraction=0.1)
    text, cut = load_corpus(), data.meta["split_at"]
    assert cut == int(len(text) * 0.9)
    tok = CharTokenizer.from_dict(data.meta["tokenizer"])
    # the last training target ends before the cut; the first test input starts at it
    last_train = tok.decode(data.y_train[-1])
    assert text.rfind(last_train, 0, cut) + 64 <= cut
    assert tok.decode(data.X_test[0]) == text[cut : cut + 64]
    assert len(data.X_test) < len(data.X_train) / 5
    # validation is the last tenth of the text before the cut, after every training window
    val_at = data.meta["val_at"]
    assert val_at == int(cut * 0.9)
    assert text.rfind(last_train, 0, val_at) + 64 <= val_at
    assert tok.decode(data.X_val[0]) == text[val_at : val_at + 64]
    assert text.find(tok.decode(data.y_val[-1]), val_at) + 64 <= cut


def test_max_windows_subsamples_reproducibly():
    a = load_text_dataset(context=16, max_windows=100, seed=1)
    b = load_text_dataset(context=16, max_windows=100, seed=1)
    c = load_text_dataset(context=16, max_windows=100, seed=2)
    assert len(a.X_train) == 100 and len(a.X_test) == 10
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert not np.array_equal(a.X_train, c.X_train)


def test_fast_mode_caps_the_windows(monkeypatch):
    monkeypatch.setenv("MAASLAB_FAST", "1")
    assert len(load_text_dataset(context=16).X_train) == 2000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context": 0}, "context and stride"),
        ({"stride": 0}, "context and stride"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"max_windows": 0}, "max_windows"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(MaaslabError, match=message):
        load_text_dataset(**kwargs)


def test_val_fraction_zero_keeps_every_training_window(monkeypatch):
    monkeypatch.delenv("MAASLAB_FAST", raising=False)
    full, split = load_text_dataset(context=64, val_fraction=0.0), load_text_dataset(context=64)
    assert full.X_val.shape == (0, 64) and len(full.X_train) > len(split.X_train)
    np.testing.assert_array_equal(full.X_test, split.X_test)  # the test part does not move
    np.testing.assert_array_equal(full.X_train[: len(split.X_train)], split.X_train)
