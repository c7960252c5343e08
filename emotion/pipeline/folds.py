"""Cross-validation as one run (`cv=loso` or `cv=kfold`): every speaker fold trained, tested and aggregated.

Fold `i` is an ordinary training run whose split `cv` derives: `data.split.strategy=loso|kfold` and
`data.split.fold=i` (rerun it alone with those overrides), logged in MLflow as a
child of one parent run. Each fold selects its checkpoint and stops early on
a validation partition of its training speakers; its test speakers choose
nothing. The parent run logs what papers report:

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
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from emotion.errors import ConfigError
from emotion.metrics import METRIC_KEYS, scores, scores_by_corpus
from emotion.sweep.trial import SweepTrial
from emotion.tracking.cv import FoldResult

log = logging.getLogger(__name__)

CV_STRATEGIES = ("loso", "kfold", "loco")


#: Trains and tests one fold's config as a child of the parent run; returns its result.
FitFold = Callable[[DictConfig, int, str], FoldResult]


def fold_config(cfg: DictConfig, fold: int) -> DictConfig:
    """The config of fold `fold` (`cv.fold`): its split is the CV's (`emotion.pipeline.build.split_options`).

    Its outputs (checkpoints) go to `fold<NN>/` under the run's output folder.
    """
    folded = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    folded.paths.output_dir = str(Path(cfg.paths.output_dir) / f"fold{fold:02d}")
    folded.cv.fold = fold
    return folded


def folds_to_run(cfg: DictConfig, n_folds: int) -> list[int]:
    """All folds, or the subset `cv.folds` (a cheaper estimate in sweeps), checked against `n_folds`."""
    chosen = list(range(n_folds)) if cfg.cv.get("folds") is None else [int(f) for f in cfg.cv.folds]
    outside = [f for f in chosen if not 0 <= f < n_folds]
    if outside or not chosen:
        raise ConfigError(f"cv.folds={chosen} must be a non-empty subset of 0..{n_folds - 1}")
    return chosen


def cross_validate(
    cfg: DictConfig, fit_fold: FitFold, parent_run_id: str, trial: SweepTrial | None
) -> list[FoldResult]:
    """Every fold of `cfg.cv` in order, each fitted as a child of `parent_run_id`; pruned per fold in a sweep.

    The number of folds is known once the first fold has read the corpus (LOSO: one per speaker).
    """
    if cfg.cv.strategy not in CV_STRATEGIES:
        raise ConfigError(f"unknown cv.strategy {cfg.cv.strategy!r}: choose none, loso, kfold or loco")
    first = int(cfg.cv.folds[0]) if cfg.cv.get("folds") else 0
    results = [fit_fold(fold_config(cfg, first), first, parent_run_id)]
    speakers = {s for partition in results[0].speakers.values() for s in partition}
    if cfg.cv.strategy == "loso":
        n_folds = len(speakers)
    elif cfg.cv.strategy == "loco":  # data=mix names speakers CORPUS:SPEAKER
        n_folds = len({s.split(":", 1)[0] for s in speakers})
    else:
        n_folds = int(cfg.cv.n_folds)
    folds = folds_to_run(cfg, n_folds)
    log.info("cross-validation %s: folds %s of %d", cfg.cv.strategy, folds, n_folds)
    log_fold(results[0], cfg.monitor)
    report_to_trial(trial, results, cfg.monitor, last=len(folds) == 1)
    for fold in folds[1:]:
        results.append(fit_fold(fold_config(cfg, fold), fold, parent_run_id))
        log_fold(results[-1], cfg.monitor)
        report_to_trial(trial, results, cfg.monitor, last=fold == folds[-1])
    return results


def report_to_trial(trial: SweepTrial | None, results: list[FoldResult], monitor: str, last: bool) -> None:
    """The running mean of the folds' best `monitor`, to a sweep's trial (which may prune between folds)."""
    if trial is not None:
        trial.report_folds(results, [r.metrics[monitor] for r in results], last)


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
