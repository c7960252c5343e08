"""What a run reports of its test: confusion matrices, classification reports, per-corpus scores, and the lines
`emotion-train` prints at its end."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import mlflow
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)

from emotion.metrics import METRICS, scores_by_corpus
from emotion.tracking.checkpoints import CHECKPOINT_ARTIFACT_DIR

#: Save figures with their legends and colour bars inside the image.
TIGHT = {"bbox_inches": "tight", "dpi": 110}


def plot_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> Figure:
    """Counts and row-normalised (recall) confusion matrices side by side."""
    figure = Figure(figsize=(12, 5.2), constrained_layout=True)
    for ax, normalize, title, fmt in zip(figure.subplots(1, 2), (None, "true"), ("counts", "row-normalised"),
                                         ("d", ".2f"), strict=True):  # fmt: skip
        ConfusionMatrixDisplay.from_predictions(
            y_true, y_pred, labels=range(len(classes)), display_labels=classes, normalize=normalize,
            ax=ax, cmap="Blues", values_format=fmt, xticks_rotation=45, im_kw={"vmin": 0},
        )  # fmt: skip
        ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix ({title})")
    return figure


def log_test_report(
    client: mlflow.MlflowClient, run_id: str, y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> None:
    """`confusion_matrix.{png,json}` and `classification_report.{json,txt}` of a run's test predictions."""
    labels = list(range(len(classes)))
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    client.log_text(run_id, json.dumps({"classes": list(classes), "counts": counts.tolist()}), "confusion_matrix.json")
    report = dict(labels=labels, target_names=list(classes), zero_division=0)
    client.log_text(run_id, classification_report(y_true, y_pred, digits=3, **report), "classification_report.txt")
    as_dict = classification_report(y_true, y_pred, output_dict=True, **report)
    client.log_text(run_id, json.dumps(as_dict, indent=2), "classification_report.json")
    figure = plot_confusion_matrix(y_true, y_pred, classes)
    client.log_figure(run_id, figure, "confusion_matrix.png", save_kwargs=TIGHT)


def per_corpus_scores(y_true: np.ndarray, y_pred: np.ndarray, corpora: Sequence[str]) -> dict[str, float]:
    """`test/{acc,uar,f1}/CORPUS` of each corpus's test clips (UAR and F1 over the classes it has)."""
    by_corpus = scores_by_corpus(y_true, y_pred, corpora)
    return {f"test/{name}/{corpus}": value for corpus, values in by_corpus.items() for name, value in values.items()}


#: Where `make ui` serves the MLflow UI of the project's SQLite store.
LOCAL_UI = "http://127.0.0.1:5000"


def ui_link(tracking_uri: str, run_id: str) -> str:
    """The run's page in the MLflow UI: the server's own, or that of `make ui` for a local store."""
    experiment = mlflow.MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base}/#/experiments/{experiment}/runs/{run_id}"


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> str:
    """Recall, precision, F1 and clips of each class, as indented text lines (a class without clips: `-`)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(classes))), zero_division=0
    )
    width = max(len(c) for c in classes)
    lines = [f"    {'class':<{width}}  recall  precision     f1  clips"]
    for name, r, p, f, n in zip(classes, recall, precision, f1, support, strict=True):
        scores = f"{r:>6.3f}  {p:>9.3f}  {f:>5.3f}" if n else f"{'-':>6}  {p:>9.3f}  {'-':>5}"
        lines.append(f"    {name:<{width}}  {scores}  {n:>5}")
    return "\n".join(lines)


def run_summary(tracking_uri: str, run_id: str, metrics: Mapping[str, float], checkpoint: str) -> str:
    """What a finished run printed last: its ID and UI page, its kept checkpoint, its test scores."""
    scores = ", ".join(f"{m.label} {metrics[f'test/{m.key}']:.4f}" for m in METRICS if f"test/{m.key}" in metrics)
    best = next((f"{name} {value:.4f}" for name, value in metrics.items() if name.endswith("_best")), "")
    lines = [f"run {run_id}: {ui_link(tracking_uri, run_id)}"]
    if checkpoint:
        lines.append(
            f"  best checkpoint ({best}): {checkpoint} (artifact {CHECKPOINT_ARTIFACT_DIR}/{Path(checkpoint).name})"
        )
    lines.append(f"  test: {scores}")
    return "\n".join(lines)


def cross_validation_summary(tracking_uri: str, run_id: str, summary: Mapping[str, float], folds: int) -> str:
    """What a finished cross-validation printed last: the parent run's ID and page, and its test scores."""
    scores = ", ".join(
        f"{m.label} {summary[f'test/{m.key}_mean']:.4f} ± {summary[f'test/{m.key}_std']:.4f} "
        f"(pooled {summary[f'test/{m.key}_pooled']:.4f})"
        for m in METRICS
    )
    return "\n".join(
        [
            f"cross-validation run {run_id} ({folds} folds, each a child run): {ui_link(tracking_uri, run_id)}",
            f"  test over folds: {scores}",
        ]
    )
