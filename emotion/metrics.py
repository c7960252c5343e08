"""Every score of predicted class indices, defined once: accuracy, and UAR and macro-F1 over the classes present.

The LightningModule's epoch scores (`val/uar`, `test/uar`, ...), the names `monitor` may follow, each fold's and
the pooled cross-validation scores, per-corpus scores, evaluations and the printed summaries all read `METRICS`.
UAR and macro-F1 average over the classes present in the true labels: a class that is predicted but absent from
a test speaker's clips does not count as a recall of 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score


def _present(y_true: np.ndarray) -> list[int]:
    return sorted(set(np.asarray(y_true).tolist()))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The share of clips predicted right."""
    return float(accuracy_score(y_true, y_pred))


def unweighted_average_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """UAR: the mean of the recalls of the classes present in `y_true`."""
    return float(recall_score(y_true, y_pred, labels=_present(y_true), average="macro", zero_division=0))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The mean F1 of the classes present in `y_true`."""
    return float(f1_score(y_true, y_pred, labels=_present(y_true), average="macro", zero_division=0))


@dataclass(frozen=True)
class Metric:
    """A score of (true, predicted) class indices: its key in metric names (`test/uar`), its label in text."""

    key: str
    label: str
    score: Callable[[np.ndarray, np.ndarray], float]


#: Every score a run, a cross-validation and an evaluation report, in the order summaries print them.
METRICS: tuple[Metric, ...] = (
    Metric("acc", "acc", accuracy),
    Metric("uar", "UAR", unweighted_average_recall),
    Metric("f1", "macro-F1", macro_f1),
)
METRIC_KEYS = tuple(metric.key for metric in METRICS)

#: What each run logs per epoch (`monitor`, early stopping and sweep objectives name one of them).
EPOCH_METRICS = tuple(f"{part}/{name}" for part in ("val", "train") for name in (*METRIC_KEYS, "loss"))


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Every metric of `METRICS` by key (`acc`, `uar`, `f1`)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {metric.key: metric.score(y_true, y_pred) for metric in METRICS}


def scores_by_corpus(y_true: np.ndarray, y_pred: np.ndarray, corpora: Sequence[str]) -> dict[str, dict[str, float]]:
    """`scores` of each corpus's clips (`corpora[i]`: the corpus of clip i), by corpus name."""
    corpora = np.asarray(corpora, dtype=str)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {corpus: scores(y_true[corpora == corpus], y_pred[corpora == corpus]) for corpus in sorted(set(corpora))}
