"""Test scores of predicted class indices: accuracy, and UAR and macro-F1 over the classes the clips have.

One definition for a run's per-corpus scores, a cross-validation's pooled scores and an evaluation's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """`acc`, and `uar` and `f1` averaged over the classes present in `y_true` (absent ones would count as 0)."""
    present = sorted(set(np.asarray(y_true).tolist()))
    return {
        "acc": float(accuracy_score(y_true, y_pred)),
        "uar": float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
    }


def scores_by_corpus(y_true: np.ndarray, y_pred: np.ndarray, corpora: Sequence[str]) -> dict[str, dict[str, float]]:
    """`scores` of each corpus's clips (`corpora[i]`: the corpus of clip i), by corpus name."""
    corpora = np.asarray(corpora, dtype=str)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {corpus: scores(y_true[corpora == corpus], y_pred[corpora == corpus]) for corpus in sorted(set(corpora))}
