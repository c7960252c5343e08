"""The MLflow parent run of a cross-validation: aggregate metrics, per-fold scores, pooled report and plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from lightning.pytorch.loggers import MLFlowLogger
from matplotlib.figure import Figure

from emotion.metrics import METRIC_KEYS
from emotion.tracking import layer_weights
from emotion.tracking.reports import TIGHT, log_test_report
from emotion.tracking.runs import log_json


@dataclass
class FoldResult:
    """What one fold's run gives back: its metrics, test predictions (class indices) and partitions' speakers."""

    fold: int
    run_id: str
    metrics: dict[str, float]
    y_true: np.ndarray
    y_pred: np.ndarray
    speakers: dict[str, list[str]]
    corpora: list[str] = field(default_factory=list)  # the corpus of each test clip (data=mix)


def fold_records(results: Sequence[FoldResult]) -> list[dict]:
    """One record per fold (speakers of each partition, run ID, scores): the parent's `cv_folds.json`."""
    return [
        {"fold": r.fold, "run_id": r.run_id, "speakers": r.speakers, "metrics": r.metrics, "test_clips": len(r.y_true)}
        for r in results
    ]


def log_cross_validation(
    logger: MLFlowLogger, results: Sequence[FoldResult], summary: Mapping[str, float], classes: Sequence[str]
) -> None:
    """Per-fold and aggregate metrics, `cv_folds.json`, `cv_folds.png` and the pooled test report."""
    client, run_id = logger.experiment, logger.run_id
    client.log_param(run_id, "folds", len(results))
    for step, result in enumerate(results):
        for metric in METRIC_KEYS:
            client.log_metric(run_id, f"fold/test/{metric}", result.metrics[f"test/{metric}"], step=step)
    for name, value in summary.items():
        client.log_metric(run_id, name, value)
    log_json(logger, fold_records(results), "cv_folds.json")
    y_true = np.concatenate([r.y_true for r in results])
    y_pred = np.concatenate([r.y_pred for r in results])
    log_test_report(client, run_id, y_true, y_pred, classes)
    client.log_figure(run_id, plot_folds(results, summary), "cv_folds.png", save_kwargs=TIGHT)
    weights = np.array([layer_weights.from_metrics(r.metrics) for r in results])
    if weights.size:
        for name, value in layer_weights.as_metrics(weights.mean(axis=0)).items():
            client.log_metric(run_id, f"{name}_mean", value)
        layer_weights.log(client, run_id, weights, f"layer weights, mean ± std over {len(results)} folds")


def plot_folds(results: Sequence[FoldResult], summary: Mapping[str, float]) -> Figure:
    """Test UAR of each fold (labelled with its test speakers) against the mean and the pooled UAR."""
    figure = Figure(figsize=(max(6, 0.7 * len(results) + 3), 4), constrained_layout=True)
    ax = figure.subplots()
    labels = [f"{r.fold}\n{_short(r.speakers['test'])}" for r in results]
    ax.bar(range(len(results)), [r.metrics["test/uar"] for r in results], color="tab:blue", label="fold test UAR")
    mean, pooled = summary["test/uar_mean"], summary["test/uar_pooled"]
    ax.axhline(mean, color="black", label=f"mean {mean:.3f}")
    ax.axhline(pooled, color="tab:orange", linestyle="--", label=f"pooled {pooled:.3f}")
    ax.set(xticks=range(len(results)), xticklabels=labels, ylim=(0, 1), xlabel="fold (test speakers)")
    ax.set_ylabel("test UAR")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # beside the bars, hiding none
    return figure


def _short(speakers: Sequence[str]) -> str:
    return ",".join(speakers[:2]) + ("…" if len(speakers) > 2 else "")
