"""The project's labelled review corpus and the TF-IDF + logistic regression baseline.

The corpus holds short English reviews labelled negative/positive, in two files: reviews.csv
(the first 1070, 7-21 words each) and reviews-2.csv (250 more, in other voices, lengths and
topics, weighted toward negation and contrast). Each review has a fixed train/test split and a
`phenomenon` tag saying what makes it easy or hard for a bag-of-words model: plain, negation,
contrast, sarcasm, mixed_intensity. The split is part of the files, not drawn at load time, so
every face and every lesson scores on the same test set.

A third file (assets/reviews/heldout.csv, split "heldout") holds reviews written separately, in
other voices, lengths and topics; `load_reviews("heldout")` reads it. It is never part of train,
validation or test, and nothing chooses a model on it: it measures how far a score carries
beyond the corpus's own style.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from maaslab.errors import MaaslabError
from maaslab.paths import ASSETS_DIR

REVIEWS_CSV = ASSETS_DIR / "reviews" / "reviews.csv"
REVIEWS_2_CSV = ASSETS_DIR / "reviews" / "reviews-2.csv"
CORPUS_CSVS = (REVIEWS_CSV, REVIEWS_2_CSV)  # the corpus, in this order
HELDOUT_CSV = ASSETS_DIR / "reviews" / "heldout.csv"
HELDOUT = "heldout"  # the split of every row of HELDOUT_CSV; never trained on or chosen by
LABELS = ("negative", "positive")  # index = integer label: 0 negative, 1 positive
SPLITS = ("train", "test")
PHENOMENA = ("plain", "negation", "contrast", "sarcasm", "mixed_intensity")
COLUMNS = ("id", "text", "label", "split", "phenomenon")


@dataclass(frozen=True)
class ReviewSet:
    """Reviews with integer labels (0 negative, 1 positive), phenomenon tags and stable ids."""

    texts: tuple[str, ...]
    labels: np.ndarray  # (N,) int64, 0 = negative, 1 = positive
    phenomena: tuple[str, ...]
    ids: tuple[str, ...]

    def __len__(self) -> int:
        """Number of reviews."""
        return len(self.texts)

    def where(self, phenomenon: str) -> ReviewSet:
        """The subset tagged with one phenomenon (e.g. "sarcasm"), in file order."""
        if phenomenon not in PHENOMENA:
            raise MaaslabError(f"unknown phenomenon {phenomenon!r}: choose one of {PHENOMENA}")
        return self.take([i for i, p in enumerate(self.phenomena) if p == phenomenon])

    def take(self, rows: list[int] | np.ndarray) -> ReviewSet:
        """The reviews at these positions, in the order given."""
        keep = [int(i) for i in rows]
        return ReviewSet(
            texts=tuple(self.texts[i] for i in keep),
            labels=self.labels[keep],
            phenomena=tuple(self.phenomena[i] for i in keep),
            ids=tuple(self.ids[i] for i in keep),
        )


@dataclass(frozen=True)
class BaselineResult:
    """Test accuracy of the TF-IDF baseline, overall and per phenomenon, with the fitted model."""

    accuracy: float
    per_phenomenon: dict[str, float]  # phenomenon -> accuracy on the test reviews with that tag
    predictions: np.ndarray  # (N_test,) int64 predicted labels, in test-set order
    pipeline: Pipeline  # fitted TfidfVectorizer + LogisticRegression; .predict(list_of_texts)
    seconds: float  # wall time of fit + predict


def _read_rows(path: Path, splits: tuple[str, ...] = SPLITS) -> list[dict[str, str]]:
    """Read and validate the CSV; every problem becomes a MaaslabError naming file and row."""
    if not path.is_file():
        raise MaaslabError(f"review file not found at {path}: restore assets/reviews/ from git")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            if header != COLUMNS:
                raise MaaslabError(
                    f"{path} has columns {header}, expected {COLUMNS}: the file is damaged, "
                    "restore it from git"
                )
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise MaaslabError(f"{path} is not valid UTF-8 ({err}): restore it from git") from err
    if not rows:
        raise MaaslabError(f"{path} holds no reviews: restore it from git")
    seen: set[str] = set()
    allowed = {"label": LABELS, "split": splits, "phenomenon": PHENOMENA}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if None in row or any(row[c] is None for c in COLUMNS):
            raise MaaslabError(f"{path} line {line}: expected {len(COLUMNS)} fields")
        for column, values in allowed.items():
            if row[column] not in values:
                raise MaaslabError(
                    f"{path} line {line}: {column} {row[column]!r} is not one of {values}"
                )
        if not row["text"].strip():
            raise MaaslabError(f"{path} line {line}: empty review text")
        if row["id"] in seen:
            raise MaaslabError(f"{path} line {line}: duplicate id {row['id']!r}")
        seen.add(row["id"])
    return rows


def load_reviews(split: str | None = None, *, path: Path | None = None) -> ReviewSet:
    """Load the review corpus, all of it or one fixed split, or the separate held-out reviews.

    Parameters
    ----------
    split:
        "train", "test", None for every corpus review (train and test), or "heldout" for the
        reviews of HELDOUT_CSV, which are never part of the corpus.
    path:
        One CSV with the same columns instead of the shipped corpus (CORPUS_CSVS, read in order
        as one) or, for "heldout", instead of assets/reviews/heldout.csv.
    """
    if split == HELDOUT:
        return _review_set(_read_rows(Path(path or HELDOUT_CSV), (HELDOUT,)))
    if split is not None and split not in SPLITS:
        raise MaaslabError(
            f"unknown split {split!r}: choose 'train', 'test', 'heldout' or None for all"
        )
    files = (Path(path),) if path is not None else CORPUS_CSVS
    rows = [row for file in files for row in _read_rows(file)]
    ids = [r["id"] for r in rows]
    if len(set(ids)) < len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise MaaslabError(f"review ids {twice[:5]} occur in more than one of {files}")
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
    return _review_set(rows)


def validation_split(
    reviews: ReviewSet, val_fraction: float = 0.15, seed: int = 0
) -> tuple[ReviewSet, ReviewSet]:
    """(train, validation): the seeded, stratified split of training reviews that
    maaslab.models.sentiment.review_dataset trains and chooses on (maaslab.data.split_train_val).
    """
    from maaslab.data import split_train_val

    if not 0 < val_fraction < 1:
        raise MaaslabError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    rows = np.arange(len(reviews))
    train, _, val, _ = split_train_val(rows, reviews.labels, val_fraction, seed, stratify=True)
    return reviews.take(train), reviews.take(val)


def _review_set(rows: list[dict[str, str]]) -> ReviewSet:
    """Validated CSV rows as a ReviewSet, in file order."""
    return ReviewSet(
        texts=tuple(r["text"] for r in rows),
        labels=np.array([LABELS.index(r["label"]) for r in rows], dtype=np.int64),
        phenomena=tuple(r["phenomenon"] for r in rows),
        ids=tuple(r["id"] for r in rows),
    )


def make_tfidf_pipeline(*, seed: int = 0) -> Pipeline:
    """An unfitted TF-IDF (word 1-2-grams) + logistic regression classifier."""
    return Pipeline(
        [
            # Bigrams let the model see "not bad" and "oh great" as units, which is the most a
            # bag-of-words model can do about negation and sarcasm.
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
            # C=10: weak regularisation suits ~850 short texts with a sparse vocabulary.
            ("logreg", LogisticRegression(C=10.0, max_iter=2000, random_state=seed)),
        ]
    )


def accuracy_by_phenomenon(predictions: np.ndarray, reviews: ReviewSet) -> dict[str, float]:
    """Accuracy of integer predictions on `reviews` within each phenomenon present, in PHENOMENA
    order."""
    correct = np.asarray(predictions) == reviews.labels
    tags = np.array(reviews.phenomena)
    return {p: float(correct[tags == p].mean()) for p in PHENOMENA if (tags == p).any()}


def tfidf_baseline(train: ReviewSet, test: ReviewSet, *, seed: int = 0) -> BaselineResult:
    """Fit TF-IDF + logistic regression on `train` and score it on `test`, per phenomenon too.

    Parameters
    ----------
    train, test:
        Review sets, usually `load_reviews("train")` and `load_reviews("test")`.
    seed:
        Seed for the logistic regression solver; the same seed gives the same result.
    """
    if len(train) == 0 or len(test) == 0:
        raise MaaslabError("tfidf_baseline needs non-empty train and test review sets")
    if len(set(train.labels.tolist())) < 2:
        raise MaaslabError("the training reviews hold only one label: the classifier needs both")
    start = time.perf_counter()
    pipeline = make_tfidf_pipeline(seed=seed)
    pipeline.fit(list(train.texts), train.labels)
    predictions = np.asarray(pipeline.predict(list(test.texts)), dtype=np.int64)
    seconds = time.perf_counter() - start
    return BaselineResult(
        accuracy=float((predictions == test.labels).mean()),
        per_phenomenon=accuracy_by_phenomenon(predictions, test),
        predictions=predictions,
        pipeline=pipeline,
        seconds=seconds,
    )
