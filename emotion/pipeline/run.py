"""Training as `emotion-train` runs it: one run, or a cross-validation when the split has folds (`split`)."""

from __future__ import annotations

import logging
import warnings

import mlflow
from omegaconf import DictConfig

from emotion.config import check_before_run, register_resolvers
from emotion.pipeline.build import base_run_name, built
from emotion.pipeline.crossval import train_cross_validation
from emotion.pipeline.fit import fit_run
from emotion.sweep.trial import SweepTrial
from emotion.tracking import reports

register_resolvers()
# Lightning advertises its cloud logger on every Trainer it builds; runs here log to MLflow.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)
# Lightning 2.6 calls a torch API that torch deprecates, on every batch it moves: nothing a user can act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, test and log one run, or one run per fold of a cross-validation (a `split` with folds); returns the
    results.

    The results hold the best monitored value (the kept checkpoint's, or its mean over folds) under its own name.
    """
    check_before_run(cfg)
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)  # models may load trained weights from runs of this store
    trial = SweepTrial.of(cfg)  # a job of an Optuna sweep
    sweep_tags = trial.tags() if trial else {}
    run_name = trial.run_name(base_run_name(cfg)) if trial else base_run_name(cfg)
    if built(cfg.split).cross_validates:
        return train_cross_validation(cfg, run_name, sweep_tags, trial)
    outcome = fit_run(cfg, run_name, sweep_tags, trial)
    print("test, per class:\n" + reports.per_class_table(outcome.y_true, outcome.y_pred, cfg.data.classes))
    print(reports.run_summary(cfg.logger.tracking_uri, outcome.run_id, outcome.metrics, outcome.checkpoint))
    return outcome.metrics
