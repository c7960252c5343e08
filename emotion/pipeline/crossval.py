"""Cross-validation as one run (`split=loso`, `kfold` or `loco`): every fold trained, tested and aggregated.

Fold `i` is an ordinary training run of the same config with `split.fold=i` (rerun it alone with that
override), logged in MLflow as a child of one parent run. Each fold selects its checkpoint and stops
early on a validation partition of its training speakers; its test speakers choose nothing. The parent
run logs what papers report:

- per fold: test acc, UAR and macro-F1 (metrics `fold/test/*`, step = fold);
- over folds: their mean and standard deviation (`test/uar_mean`, `test/uar_std`, ...; population std);
- pooled: the metrics, confusion matrix and classification report of all folds' test predictions
  together (`test/uar_pooled`, ...): with LOSO, every clip is predicted exactly once;
- `val/uar`: the mean over folds of each fold's best validation UAR, the objective of a sweep whose
  trials are cross-validations (never a test score);
- `cv_folds.json`: each fold's speakers, run and scores.

In a sweep, a trial is one cross-validation: after each fold it reports the running mean validation
UAR to Optuna (step = folds done), and the pruner may stop it there, but never after its last fold: a
trial that ran every fold is complete. Reporting per fold, not per epoch, compares trials on the same
speakers at every step: per-epoch values of one fold would rank trials on that fold's validation
speakers alone. A pruned trial's parent run still logs the aggregates of the folds it ran.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from emotion.metrics import METRIC_KEYS, scores, scores_by_corpus
from emotion.pipeline.build import build_datamodule, build_logger, built, run_tags
from emotion.pipeline.cost import log_cost, measure_cost
from emotion.pipeline.fit import fit_run
from emotion.sweep.trial import PrunedBetweenFolds, SweepTrial
from emotion.tracking import reports, runs
from emotion.tracking.cv import FoldResult, log_cross_validation
from emotion.tracking.names import CV_ROLE, CV_TAG, FOLD_TAG, ROLE_TAG

log = logging.getLogger(__name__)


def train_cross_validation(
    cfg: DictConfig, run_name: str, sweep_tags: dict[str, str], trial: SweepTrial | None
) -> dict[str, float]:
    """Every fold of `cfg.split` as a child of one parent run, which logs their aggregate; returns the aggregate."""
    splitter = built(cfg.split)
    manifest = build_datamodule(cfg, built(cfg.features)).read_manifest().clips
    folds = splitter.folds_to_run(manifest)
    tags = run_tags(cfg, leaky=False) | sweep_tags | {ROLE_TAG: CV_ROLE, CV_TAG: splitter.name}
    logger = build_logger(cfg, f"{run_name} cv-{splitter.name}", tags)
    monitor, classes = cfg.monitor, list(cfg.data.classes)
    log.info("cross-validation %s: folds %s", splitter.name, folds)
    results: list[FoldResult] = []
    first_model = ""  # the first fold's model file: the cross-validation's cost is measured on it
    with runs.run_status(logger, trial=trial is not None):
        runs.log_config(logger, OmegaConf.to_container(cfg, resolve=True))
        try:
            for fold in folds:
                fold_tags = {"mlflow.parentRunId": logger.run_id, FOLD_TAG: str(fold), CV_TAG: splitter.name}
                outcome = fit_run(fold_config(cfg, fold), f"{run_name} fold{fold:02d}", fold_tags, trial=None)
                results.append(outcome.fold_result(fold))
                first_model = first_model or outcome.checkpoint
                log_fold(results[-1], monitor)
                if trial is not None:  # the running mean of the folds' best `monitor`; the pruner may stop here
                    trial.report_folds(results, [r.metrics[monitor] for r in results], last=fold == folds[-1])
        except PrunedBetweenFolds:  # the parent keeps the aggregates of the folds that ran
            log_cross_validation(logger, results, summarize(results, monitor, len(classes)), classes)
            raise
        summary = summarize(results, monitor, len(classes))
        log_cross_validation(logger, results, summary, classes)
        summary |= log_cost(logger, measure_cost(cfg, trial, first_model, manifest))
    y_true, y_pred = (np.concatenate([getattr(r, name) for r in results]) for name in ("y_true", "y_pred"))
    print("test, every fold's clips pooled, per class:\n" + reports.per_class_table(y_true, y_pred, classes))
    print(reports.cross_validation_summary(cfg.logger.tracking_uri, logger.run_id, summary, len(results)))
    return summary | {"trainable_params": results[0].metrics.get("trainable_params", float("nan"))}


def fold_config(cfg: DictConfig, fold: int) -> DictConfig:
    """The config of fold `fold`: `split.fold` set, its outputs (checkpoints) in `fold<NN>/` of the run's folder."""
    folded = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    folded.paths.output_dir = str(Path(cfg.paths.output_dir) / f"fold{fold:02d}")
    folded.split.fold = fold
    return folded


def log_fold(result: FoldResult, monitor: str) -> None:
    log.info(
        "fold %d (test speakers %s): test UAR %.3f, best %s %.3f",
        result.fold,
        ",".join(result.speakers["test"]),
        result.metrics["test/uar"],
        monitor,
        result.metrics[monitor],
    )


def summarize(results: list[FoldResult], monitor: str, num_classes: int) -> dict[str, float]:
    """Mean and population std over folds of each test metric and of `monitor`, and the pooled test metrics."""
    summary: dict[str, float] = {}
    for name in [f"test/{m}" for m in METRIC_KEYS] + [monitor]:
        values = np.array([r.metrics[name] for r in results])
        summary[f"{name}_mean"] = float(values.mean())
        summary[f"{name}_std"] = float(values.std())
    y_true = np.concatenate([r.y_true for r in results])
    y_pred = np.concatenate([r.y_pred for r in results])
    if int(np.max(y_true)) >= num_classes:
        raise ValueError(f"class index {int(np.max(y_true))} outside the {num_classes} classes")
    for name, value in scores(y_true, y_pred).items():
        summary[f"test/{name}_pooled"] = value
    corpora = np.concatenate([np.asarray(r.corpora, dtype=str) for r in results])
    if len(corpora) == len(y_true) and len(set(corpora.tolist())) > 1:  # data=mix: pooled scores of each corpus
        for corpus, values in scores_by_corpus(y_true, y_pred, corpora).items():
            summary |= {f"test/{name}_pooled/{corpus}": value for name, value in values.items()}
    summary[monitor] = summary[f"{monitor}_mean"]  # what a sweep's trial returns
    summary[f"{monitor}_best"] = summary[f"{monitor}_mean"]  # the mean of the folds' kept checkpoints' values
    return summary
