"""More than accuracy: precision, recall and F1 per class and macro, and calibration.

Lessons 06 and 09 (and the Inference page) score a classifier on its test split with these.
Everything here is pure numpy on labels and probabilities, so any classifier works: a network's
`predict_proba`, a wrapper's `Prediction.probabilities`, a scikit-learn pipeline.

- **Precision** of class k: of the examples predicted k, the share that are k.
  **Recall**: of the examples that are k, the share predicted k. **F1**: their harmonic mean,
  2 TP / (2 TP + FP + FN). **Macro** averages take the plain mean over classes, so a rare class
  counts as much as a common one (as scikit-learn's `average="macro"`).
- **Undefined values.** A class that is never predicted has no precision (0 / 0), one without
  examples has no recall, and one with neither has no F1. They are set to `zero_division`, as in
  scikit-learn's `precision_recall_fscore_support(..., zero_division=...)`: 0.0 by default (the
  value sklearn's default "warn" also returns, here without the warning), 1.0, or NaN, which the
  macro averages then leave out. The report lists the classes concerned, so a face can say so.
- **Calibration.** A model is calibrated when, of the answers it gives with confidence 0.8, 80 %
  are right. `reliability` bins the predicted probabilities into `n_bins` equal-width bins of
  [0, 1] (scikit-learn's `calibration_curve(strategy="uniform")` bins: a value on an edge
  belongs to the lower bin, 0 to the first) and compares each bin's mean probability with how
  often the outcome happened. The **expected calibration error** is the gap averaged over bins,
  weighted by how many examples each holds: 0 when every bin's confidence matches its accuracy,
  1 when the model is always sure and always wrong. `calibration` applies it to a classifier's
  top label (confidence = the largest probability, outcome = the prediction was right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from maaslab.errors import MaaslabError
from maaslab.evaluation import confusion_matrix

DEFAULT_BINS = 10  # reliability bins of width 0.1, the usual choice
MIN_BINS, MAX_BINS = 2, 50  # fewer says nothing; more leaves most bins of a test split empty


# --- precision, recall, F1 ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClassificationReport:
    """Per-class precision, recall and F1 of one set of predictions, with their macro means."""

    precision: np.ndarray  # (C,) TP / predicted; zero_division where a class is never predicted
    recall: np.ndarray  # (C,) TP / examples; zero_division where a class has no example
    f1: np.ndarray  # (C,) 2 TP / (2 TP + FP + FN); zero_division where both counts are 0
    support: np.ndarray  # (C,) int: examples of each class (row sums of the confusion matrix)
    predicted: np.ndarray  # (C,) int: predictions of each class (column sums)
    accuracy: float  # share of all examples predicted right
    zero_division: float  # the value given to undefined entries (0.0, 1.0 or NaN)

    @property
    def macro_precision(self) -> float:
        """Mean precision over classes (NaN entries left out)."""
        return _mean(self.precision)

    @property
    def macro_recall(self) -> float:
        """Mean recall over classes (NaN entries left out)."""
        return _mean(self.recall)

    @property
    def macro_f1(self) -> float:
        """Mean F1 over classes (NaN entries left out): sklearn's f1_score(average="macro")."""
        return _mean(self.f1)

    @property
    def never_predicted(self) -> list[int]:
        """Classes with no prediction: their precision is undefined and set to zero_division."""
        return np.flatnonzero(self.predicted == 0).tolist()

    @property
    def without_examples(self) -> list[int]:
        """Classes with no example: their recall is undefined and set to zero_division."""
        return np.flatnonzero(self.support == 0).tolist()


def _mean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), zero_division)


def _labels(values: object, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise MaaslabError(f"{name} must be a non-empty 1-D array of class indices")
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu" or array.min() < 0:
        raise MaaslabError(f"{name} must hold class indices 0, 1, 2, ...; got {array[:5]}...")
    return array.astype(np.int64)


def precision_recall_f1(
    y_true: object, y_pred: object, n_classes: int | None = None, zero_division: float = 0.0
) -> ClassificationReport:
    """Precision, recall and F1 of every class (and their macro means), from the labels.

    Parameters
    ----------
    y_true : the labels (N,), class indices 0..C-1.
    y_pred : the predicted classes (N,), e.g. `proba.argmax(axis=1)`.
    n_classes : C, so that a class missing from both arrays still gets its row (None: the
        largest index + 1). The macro means average over all C classes.
    zero_division : what an undefined precision, recall or F1 becomes: 0.0 (sklearn's default
        value), 1.0, or math.nan to leave the class out of the macro means.
    """
    if not isinstance(zero_division, int | float) or not (
        zero_division in (0.0, 1.0) or math.isnan(zero_division)
    ):
        raise MaaslabError(f"zero_division must be 0.0, 1.0 or math.nan, got {zero_division!r}")
    truth, pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if truth.shape != pred.shape:
        raise MaaslabError(f"{truth.size} labels but {pred.size} predictions: give one per example")
    largest = int(max(truth.max(), pred.max()))
    if n_classes is not None and largest >= n_classes:
        raise MaaslabError(f"class index {largest} found, but n_classes is {n_classes}")
    cm = confusion_matrix(truth, pred, n_classes or largest + 1)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    return ClassificationReport(
        precision=_ratio(tp, predicted, zero_division),
        recall=_ratio(tp, support, zero_division),
        # 2TP / (2TP + FP + FN) = 2TP / (predicted + support): defined whenever either is > 0
        f1=_ratio(2 * tp, predicted + support, zero_division),
        support=support,
        predicted=predicted,
        accuracy=float(tp.sum() / cm.sum()),
        zero_division=float(zero_division),
    )


def undefined_note(report: ClassificationReport, class_names: object = None) -> str | None:
    """A sentence naming the classes whose precision or recall is undefined and the value they
    were given (None when every value is defined): what a page or a notebook says under the table.
    """
    names = [str(n) for n in class_names] if class_names is not None else None
    if names is None:
        names = [str(k) for k in range(len(report.support))]

    def listed(classes: list[int]) -> tuple[str, str]:
        return ", ".join(names[k] for k in classes), "its" if len(classes) == 1 else "their"

    parts = []
    if report.never_predicted:
        never, its = listed(report.never_predicted)
        parts.append(f"Never predicted: {never}, so {its} precision is undefined (0 of 0 right)")
    if report.without_examples:
        absent, its = listed(report.without_examples)
        parts.append(f"No example of {absent}, so {its} recall is undefined")
    if not parts:
        return None
    if math.isnan(report.zero_division):
        shown = "NaN, left out of the macro means"
    else:
        shown = f"{report.zero_division:g}"
    return f"{'. '.join(parts)}. Undefined values are shown as {shown} (sklearn's zero_division)."


def report_frame(report: ClassificationReport, class_names: object = None) -> pd.DataFrame:
    """The report as a table: one row per class and a last "macro average" row."""
    names = [str(n) for n in class_names] if class_names is not None else None
    if names is None:
        names = [str(k) for k in range(len(report.support))]
    if len(names) != len(report.support):
        raise MaaslabError(f"{len(names)} class names for {len(report.support)} classes")
    frame = pd.DataFrame(
        {
            "precision": report.precision,
            "recall": report.recall,
            "F1": report.f1,
            "examples": report.support,
            "predicted": report.predicted,
        },
        index=pd.Index(names, name="class"),
    )
    frame.loc["macro average"] = [
        report.macro_precision,
        report.macro_recall,
        report.macro_f1,
        int(report.support.sum()),
        int(report.predicted.sum()),
    ]
    return frame.astype({"examples": int, "predicted": int})


# --- calibration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Binned predicted probabilities against how often the outcome happened (a reliability
    diagram's data), and the expected calibration error."""

    edges: np.ndarray  # (B + 1,) bin edges 0, 1/B, ..., 1; bin b holds (edges[b], edges[b+1]]
    count: np.ndarray  # (B,) int: examples in each bin
    confidence: np.ndarray  # (B,) mean predicted probability of each bin (NaN if empty)
    accuracy: np.ndarray  # (B,) share of its examples whose outcome happened (NaN if empty)
    ece: float  # sum over bins of count / N * |accuracy - confidence|

    @property
    def gap(self) -> np.ndarray:
        """(B,) accuracy minus confidence: < 0 where the model is overconfident (NaN if empty)."""
        return self.accuracy - self.confidence


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer):
        raise MaaslabError(f"n_bins must be a whole number, got {n_bins!r}")
    if not MIN_BINS <= n_bins <= MAX_BINS:
        raise MaaslabError(f"n_bins must be between {MIN_BINS} and {MAX_BINS}, got {n_bins}")
    return int(n_bins)


def reliability(prob: object, outcome: object, n_bins: int = DEFAULT_BINS) -> Calibration:
    """Bin probabilities of an event into equal-width bins; compare each bin with the outcomes.

    Parameters
    ----------
    prob : (N,) predicted probabilities of the event, in [0, 1] (e.g. P(positive), or the
        confidence of the predicted class).
    outcome : (N,) 1 where the event happened, 0 where not (booleans are fine).
    n_bins : number of equal-width bins of [0, 1], MIN_BINS..MAX_BINS.
    """
    n_bins = _check_bins(n_bins)
    p = np.asarray(prob, dtype=float)
    hit = np.asarray(outcome)
    if p.ndim != 1 or p.size == 0 or hit.shape != p.shape:
        raise MaaslabError(
            f"prob and outcome must be 1-D arrays of one length, got {p.shape} and {hit.shape}"
        )
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise MaaslabError("prob must hold probabilities in [0, 1] (no NaN)")
    if not np.all((hit == 0) | (hit == 1)):
        raise MaaslabError("outcome must hold 0 or 1 (did the event happen?) for every example")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted on the inner edges puts a value equal to an edge in the lower bin, as sklearn.
    bins = np.searchsorted(edges[1:-1], p)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(bins, weights=p, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=hit.astype(float), minlength=n_bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] / p.size * np.abs(accuracy[filled] - confidence[filled])))
    return Calibration(edges, count, confidence, accuracy, ece)


def calibration(proba: object, y_true: object, n_bins: int = DEFAULT_BINS) -> Calibration:
    """Top-label calibration of a classifier: its confidence (the largest probability of each
    row) against whether that prediction was right.

    Parameters
    ----------
    proba : class probabilities (N, C), each row summing to 1 (`predict_proba`'s output).
    y_true : the labels (N,).
    n_bins : number of equal-width confidence bins, MIN_BINS..MAX_BINS.
    """
    p = np.asarray(proba, dtype=float)
    truth = _labels(y_true, "y_true")
    if p.ndim != 2 or p.shape[0] != truth.size or p.shape[1] < 2:
        raise MaaslabError(
            f"proba must be (N, C) with C >= 2 and one row per label; got {p.shape} "
            f"for {truth.size} labels"
        )
    if truth.max() >= p.shape[1]:
        raise MaaslabError(f"label {truth.max()} but proba has only {p.shape[1]} columns")
    in_range = np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1
    if not in_range or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise MaaslabError(
            "each row of proba must hold values in [0, 1] summing to 1: pass probabilities "
            "(softmax), not logits"
        )
    return reliability(p.max(axis=1), p.argmax(axis=1) == truth, n_bins)


# --- both at once ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierScores:
    """Everything the Inference page and lessons 06 and 09 show about one classifier's test
    predictions."""

    report: ClassificationReport  # precision, recall, F1 per class and macro
    calibration: Calibration  # reliability bins of the top-label confidence, and the ECE
    n: int  # examples scored


def score_classifier(
    proba: object, y_true: object, n_bins: int = DEFAULT_BINS, zero_division: float = 0.0
) -> ClassifierScores:
    """Precision/recall/F1 of the argmax predictions and top-label calibration, from (N, C)
    probabilities and the labels (see `precision_recall_f1` and `calibration`)."""
    cal = calibration(proba, y_true, n_bins)
    p = np.asarray(proba, dtype=float)
    report = precision_recall_f1(y_true, p.argmax(axis=1), p.shape[1], zero_division)
    return ClassifierScores(report, cal, p.shape[0])
