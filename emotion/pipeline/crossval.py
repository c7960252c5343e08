"""A cross-validation as one MLflow run: a parent run whose children are the folds' runs (see `folds`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from emotion.pipeline.build import build_logger, run_tags
from emotion.pipeline.folds import cross_validate, summarize
from emotion.sweep.trial import PrunedBetweenFolds, SweepTrial
from emotion.tracking import reports, runs
from emotion.tracking.cv import FoldResult, log_cross_validation
from emotion.tracking.names import CV_ROLE, CV_TAG, FOLD_TAG, ROLE_TAG

log = logging.getLogger(__name__)

#: Trains and tests one fold's config as a run named as given, with the given tags.
FitRun = Callable[[DictConfig, str, dict[str, str]], FoldResult]


def train_cross_validation(
    cfg: DictConfig, run_name: str, sweep_tags: dict[str, str], trial: SweepTrial | None, fit_run: FitRun
) -> dict[str, float]:
    """Every fold of `cfg.cv` as a child of one parent run, which logs their aggregate; returns the aggregate."""
    tags = (
        run_tags(cfg, leaky=False) | sweep_tags | {"split": cfg.cv.strategy, ROLE_TAG: CV_ROLE, CV_TAG: cfg.cv.strategy}
    )
    logger = build_logger(cfg, f"{run_name} cv-{cfg.cv.strategy}", tags)
    monitor, classes = cfg.monitor, list(cfg.data.classes)
    with runs.run_status(logger, trial=trial is not None):
        runs.log_config(logger, OmegaConf.to_container(cfg, resolve=True))

        def fit_fold(fold_cfg: DictConfig, fold: int, parent_run_id: str) -> FoldResult:
            fold_tags = {"mlflow.parentRunId": parent_run_id, FOLD_TAG: str(fold), CV_TAG: cfg.cv.strategy}
            return fit_run(fold_cfg, f"{run_name} fold{fold:02d}", fold_tags)

        try:
            results = cross_validate(cfg, fit_fold, logger.run_id, trial)
        except PrunedBetweenFolds as pruned:  # the parent keeps the aggregates of the folds that ran
            log_cross_validation(logger, pruned.results, summarize(pruned.results, monitor, len(classes)), classes)
            raise
        summary = summarize(results, monitor, len(classes))
        log_cross_validation(logger, results, summary, classes)
        log.info(
            "cross-validation %s over %d folds: test UAR %.3f ± %.3f (pooled %.3f), test acc %.3f ± %.3f",
            cfg.cv.strategy,
            len(results),
            summary["test/uar_mean"],
            summary["test/uar_std"],
            summary["test/uar_pooled"],
            summary["test/acc_mean"],
            summary["test/acc_std"],
        )
    print(reports.cross_validation_summary(cfg.logger.tracking_uri, logger.run_id, summary, len(results)))
    params = results[0].metrics.get("trainable_params", float("nan"))
    return summary | {"trainable_params": params}
