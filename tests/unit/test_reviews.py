"""The review corpus is large, balanced, hard enough, and its loader rejects broken files."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from maaslab.errors import MaaslabError
from maaslab.reviews import (
    COLUMNS,
    HELDOUT,
    HELDOUT_CSV,
    LABELS,
    PHENOMENA,
    REVIEWS_2_CSV,
    REVIEWS_CSV,
    load_reviews,
    tfidf_baseline,
)


def _norm(text: str) -> str:
    """Case- and punctuation-insensitive form of a text, to catch disguised duplicates."""
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def train():
    return load_reviews("train")


@pytest.fixture(scope="module")
def test_set():
    return load_reviews("test")


def test_counts_and_balance(train, test_set):
    everything = load_reviews()
    assert len(everything) >= 1000
    assert len(everything) == len(train) + len(test_set)
    assert len(test_set) >= 200
    assert 0.15 <= len(test_set) / len(everything) <= 0.25
    for part in (everything, train, test_set):
        counts = np.bincount(part.labels, minlength=2)
        assert counts[0] == counts[1], counts


@pytest.mark.parametrize("split", ["train", "test"])
def test_hard_phenomena_are_at_least_15_percent(split):
    part = load_reviews(split)
    counts = Counter(part.phenomena)
    assert set(counts) == set(PHENOMENA)
    for tag in ("negation", "contrast", "sarcasm"):
        assert counts[tag] / len(part) >= 0.15, (tag, counts[tag], len(part))


def test_no_duplicates_and_no_leak_between_splits(train, test_set):
    everything = load_reviews()
    normed = [_norm(t) for t in everything.texts]
    dupes = [t for t, n in Counter(normed).items() if n > 1]
    assert not dupes, dupes[:5]
    assert not {_norm(t) for t in train.texts} & {_norm(t) for t in test_set.texts}
    assert len(set(everything.ids)) == len(everything)


def test_texts_are_short_reviews_with_valid_labels():
    everything = load_reviews()
    lengths = [len(t.split()) for t in load_reviews(path=REVIEWS_CSV).texts]
    assert min(lengths) >= 5 and max(lengths) <= 40
    assert max(len(t.split()) for t in everything.texts) <= 40
    assert set(everything.labels.tolist()) == {0, 1}
    assert everything.labels.dtype == np.int64
    assert LABELS == ("negative", "positive")
    with REVIEWS_CSV.open(newline="", encoding="utf-8") as fh:
        first = next(csv.DictReader(fh))
    assert LABELS[int(load_reviews().labels[0])] == first["label"]


def _words(text: str) -> set[str]:
    return set(_norm(text).split())


def test_heldout_reviews_are_balanced_varied_and_apart_from_the_corpus():
    heldout, corpus = load_reviews(HELDOUT), load_reviews()
    assert len(heldout) >= 200 and set(heldout.phenomena) == set(PHENOMENA)
    assert np.bincount(heldout.labels, minlength=2).tolist() == [len(heldout) // 2] * 2
    with HELDOUT_CSV.open(newline="", encoding="utf-8") as fh:
        assert {row["split"] for row in csv.DictReader(fh)} == {HELDOUT}
    # another voice than the corpus's 7-21 words: one-liners and paragraphs of 40-80 words
    lengths = [len(t.split()) for t in heldout.texts]
    assert sum(n <= 5 for n in lengths) >= 15 and sum(40 <= n <= 80 for n in lengths) >= 15
    assert not set(heldout.ids) & set(corpus.ids)
    normed = [_norm(t) for t in heldout.texts]
    assert len(set(normed)) == len(normed)
    assert not set(normed) & {_norm(t) for t in corpus.texts}
    # no near-duplicate either: at most half the distinct words shared with any corpus review
    corpus_words = [_words(t) for t in corpus.texts]
    for text in heldout.texts:
        words = _words(text)
        closest = max(len(words & other) / len(words | other) for other in corpus_words)
        assert closest < 0.6, text


def test_heldout_reviews_are_no_part_of_the_corpus_or_the_language_model_text():
    from maaslab.subwords import load_documents

    heldout = set(load_reviews(HELDOUT).texts)
    for split in ("train", "test", None):
        assert not heldout & set(load_reviews(split).texts), split
    assert not heldout & {doc.text for doc in load_documents()}


def test_second_file_adds_other_voices_balanced_and_apart(train, test_set):
    first, second = load_reviews(path=REVIEWS_CSV), load_reviews(path=REVIEWS_2_CSV)
    assert load_reviews().ids == first.ids + second.ids  # the corpus is both files, in order
    assert len(second) == 250 and not set(first.ids) & set(second.ids)
    assert set(second.phenomena) == set(PHENOMENA)
    with REVIEWS_2_CSV.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for split in ("train", "test"):
        labels = [r["label"] for r in rows if r["split"] == split]
        assert labels.count("negative") == labels.count("positive") >= 25, split
    # lengths the first file lacks (it holds 7-21 words): one-liners and 22-40 words
    lengths = [len(t.split()) for t in second.texts]
    assert sum(n <= 5 for n in lengths) >= 20 and sum(22 <= n <= 40 for n in lengths) >= 40
    # written apart: at most half the distinct words shared with any review of the first file
    # or of the held-out set
    others = [_words(t) for t in first.texts + load_reviews(HELDOUT).texts]
    for text in second.texts:
        words = _words(text)
        assert max(len(words & o) / len(words | o) for o in others) < 0.5, text


def test_corpus_files_may_not_share_ids(tmp_path, monkeypatch):
    import maaslab.reviews as reviews

    one = _write(tmp_path / "one.csv", COLUMNS, [GOOD])
    two = _write(tmp_path / "two.csv", COLUMNS, [[GOOD[0], "Another text.", *GOOD[2:]]])
    monkeypatch.setattr(reviews, "CORPUS_CSVS", (one, two))
    with pytest.raises(MaaslabError, match=r"review ids \['r1'\] occur in more than one"):
        load_reviews()


def test_heldout_loader_refuses_corpus_rows(tmp_path):
    path = _write(tmp_path / "h.csv", COLUMNS, [GOOD])
    with pytest.raises(MaaslabError, match="split 'train' is not one of \\('heldout',\\)"):
        load_reviews(HELDOUT, path=path)
    path = _write(tmp_path / "h2.csv", COLUMNS, [[*GOOD[:3], HELDOUT, GOOD[4]]])
    assert load_reviews(HELDOUT, path=path).ids == ("r1",)
    with pytest.raises(MaaslabError, match="split 'heldout'"):
        load_reviews(path=path)  # the corpus loader refuses held-out rows in its file


def test_where_selects_one_phenomenon(test_set):
    sarcasm = test_set.where("sarcasm")
    assert len(sarcasm) == test_set.phenomena.count("sarcasm")
    assert set(sarcasm.phenomena) == {"sarcasm"}
    with pytest.raises(MaaslabError, match="unknown phenomenon"):
        test_set.where("irony")


def _write(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD = ["r1", "Lovely little hotel with a great breakfast.", "positive", "train", "plain"]


def test_loader_reads_a_valid_custom_file(tmp_path):
    path = _write(tmp_path / "ok.csv", COLUMNS, [GOOD, ["r2", *GOOD[1:3], "test", "plain"]])
    assert load_reviews(path=path).ids == ("r1", "r2")
    assert load_reviews("test", path=path).ids == ("r2",)


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        (("id", "text", "label", "split"), GOOD[:4], "columns"),
        (COLUMNS, [*GOOD[:2], "great", *GOOD[3:]], "label 'great'"),
        (COLUMNS, [*GOOD[:3], "valid", GOOD[4]], "split 'valid'"),
        (COLUMNS, [*GOOD[:4], "irony"], "phenomenon 'irony'"),
        (COLUMNS, [GOOD[0], "  ", *GOOD[2:]], "empty review text"),
        (COLUMNS, GOOD[:4], "expected 5 fields"),
    ],
)
def test_loader_rejects_a_broken_file(tmp_path, header, row, message):
    path = _write(tmp_path / "broken.csv", header, [row])
    with pytest.raises(MaaslabError, match=message):
        load_reviews(path=path)


def test_loader_rejects_missing_file_duplicate_ids_and_bad_split(tmp_path):
    with pytest.raises(MaaslabError, match="not found"):
        load_reviews(path=tmp_path / "missing.csv")
    path = _write(tmp_path / "dupes.csv", COLUMNS, [GOOD, GOOD])
    with pytest.raises(MaaslabError, match="duplicate id"):
        load_reviews(path=path)
    with pytest.raises(MaaslabError, match="unknown split"):
        load_reviews("validation")


def test_baseline_beats_chance_but_not_the_hard_cases(train, test_set):
    result = tfidf_baseline(train, test_set, seed=0)
    again = tfidf_baseline(train, test_set, seed=0)
    assert result.accuracy == again.accuracy
    np.testing.assert_array_equal(result.predictions, again.predictions)
    # Measured 0.687 on the shipped split: far above chance, far below a model that reads.
    assert 0.6 < result.accuracy < 0.85
    assert set(result.per_phenomenon) == set(PHENOMENA)
    manual = float((result.predictions == test_set.labels).mean())
    assert result.accuracy == pytest.approx(manual)
    sarcasm = test_set.where("sarcasm")
    assert result.per_phenomenon["sarcasm"] == pytest.approx(
        float((result.pipeline.predict(list(sarcasm.texts)) == sarcasm.labels).mean())
    )
    # Contrast reviews need the clause after "but" to outweigh the one before it.
    assert result.per_phenomenon["contrast"] < result.per_phenomenon["plain"]
    assert result.seconds > 0


def test_baseline_rejects_one_label_training_set(train, test_set):
    only_negative = train.where("sarcasm")
    keep = only_negative.labels == 0
    one_label = type(train)(
        texts=tuple(t for t, k in zip(only_negative.texts, keep, strict=True) if k),
        labels=only_negative.labels[keep],
        phenomena=tuple(p for p, k in zip(only_negative.phenomena, keep, strict=True) if k),
        ids=tuple(i for i, k in zip(only_negative.ids, keep, strict=True) if k),
    )
    with pytest.raises(MaaslabError, match="only one label"):
        tfidf_baseline(one_label, test_set)
