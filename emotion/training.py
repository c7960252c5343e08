"""Training one run, or one run per fold of a cross-validation: build, fit, test and log to MLflow.

`train(cfg)` takes the composed config of `emotion-train` (see `emotion.train`, the thin Hydra app) and
returns the run's results; tests and notebooks call it with configs of their own.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import mlflow
import numpy as np
import optuna
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import nn

from emotion.config import check_before_run, register_resolvers
from emotion.crossval import FoldResult, PrunedBetweenFolds, cross_validate, summarize
from emotion.data.datamodule import EmotionDataModule
from emotion.data.features import FeatureSet
from emotion.data.splits import PARTITIONS
from emotion.errors import ConfigError
from emotion.models.module import EmotionClassifier, count_trainable_params
from emotion.sweep.trial import load_trial, pruning_callback, trial_run_name
from emotion.tracking import layer_weights, runs
from emotion.tracking.cv import CV_ROLE, log_cross_validation

log = logging.getLogger(__name__)
register_resolvers()
# Lightning advertises its cloud logger on every Trainer it builds; runs here log to MLflow.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)


def build_model(cfg: DictConfig, features: FeatureSet, num_classes: int) -> nn.Module:
    """The network of `cfg.model` for the shapes `features` produce; ConfigError naming both if they do not fit."""
    try:
        return instantiate(cfg.model)(input_shapes=features.shapes(), num_classes=num_classes)
    except ConfigError as exc:
        model = cfg.model.get("_target_", "?").rsplit(".", 1)[-1]
        raise ConfigError(f"model {model} cannot take features={features.name}: {exc}") from None


CHECKPOINT_NAME = "best-epoch{epoch:02d}"


def checkpoint_epoch(path: str) -> int | None:
    """The epoch of a checkpoint file named by `CHECKPOINT_NAME`."""
    match = re.search(r"best-epoch(\d+)", Path(path).name)
    return int(match[1]) if match else None


def make_callbacks(cfg: DictConfig, checkpoint_dir: Path) -> tuple[ModelCheckpoint, list[pl.Callback]]:
    """Best-checkpoint saving on the monitored metric, early stopping when `patience` is set, and every
    `callbacks.NAME` entry with a `_target_` (LearningRateMonitor, StochasticWeightAveraging, ...)."""
    monitor, mode = cfg.callbacks.monitor, cfg.callbacks.mode
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename=CHECKPOINT_NAME,
        monitor=monitor,
        mode=mode,
        auto_insert_metric_name=False,
        save_top_k=1,
    )
    callbacks: list[pl.Callback] = [checkpoint]
    if cfg.callbacks.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.callbacks.early_stopping_patience))
    callbacks += [instantiate(entry) for entry in cfg.callbacks.values() if isinstance(entry, DictConfig)]
    return checkpoint, callbacks


def task_overrides() -> str:
    """The command line's overrides of this job (a sweep's trial: its parameters too), as one string."""
    if not HydraConfig.initialized():
        return ""
    return shlex.join(o for o in HydraConfig.get().overrides.task if not o.startswith("+trial."))


def run_tags(cfg: DictConfig, leaky: bool) -> dict[str, str]:
    """Tags that make runs easy to filter in the MLflow UI, with the user's own (`logger.tags`)."""
    user = {str(k): str(v) for k, v in (cfg.logger.get("tags") or {}).items()}
    overrides = {"overrides": task_overrides()} if HydraConfig.initialized() else {}
    return (
        user
        | overrides
        | {
            "architecture": getattr(get_class(cfg.model._target_), "arch", cfg.model._target_.rsplit(".", 1)[-1]),
            "features": get_class(cfg.features._target_).name,
            "data": cfg.data.name,
            "split": cfg.data.split.strategy,
            "window": cfg.features.window.mode,
            "augmentation": cfg.augment.get("name", "none") if cfg.augment else "none",
            "leaky": str(leaky).lower(),
        }
    )


def base_run_name(cfg: DictConfig) -> str:
    """The run name the user gave, else ARCHITECTURE-FEATURES-CORPUS (`cnn2d-logmel-emodb`)."""
    tags = run_tags(cfg, leaky=False)
    return cfg.logger.run_name or f"{tags['architecture']}-{tags['features']}-{tags['data']}"


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, test and log one run, or one run per fold of a cross-validation (`cv`); returns the results.

    The results hold the best monitored value (the kept checkpoint's, or its mean over folds) under its own name.
    """
    check_before_run(cfg)
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)  # models may load trained weights from runs of this store
    trial = None
    sweep_tags: dict[str, str] = {}
    run_name = base_run_name(cfg)
    if cfg.get("trial"):  # a job of an Optuna sweep
        trial = load_trial(cfg.trial, HydraConfig.get().sweeper.get("pruner") if HydraConfig.initialized() else None)
        sweep_tags = {
            "mlflow.parentRunId": cfg.trial.parent_run_id,
            "study": cfg.trial.study_name,
            "trial_number": str(trial.number),
        }
        run_name = trial_run_name(run_name, trial.number)
    if cfg.cv.strategy == "none":
        outcome = fit_run(cfg, run_name, sweep_tags, trial)
        print(runs.run_summary(cfg.logger.tracking_uri, outcome.run_id, outcome.metrics, outcome.checkpoint))
        return outcome.metrics
    return train_cross_validation(cfg, run_name, sweep_tags, trial)


def train_cross_validation(
    cfg: DictConfig, run_name: str, sweep_tags: dict[str, str], trial: optuna.Trial | None
) -> dict[str, float]:
    """A parent run whose children are the folds' runs; it logs their aggregate (see `emotion.crossval`)."""
    tags = run_tags(cfg, leaky=False) | sweep_tags | {"split": cfg.cv.strategy, "role": CV_ROLE, "cv": cfg.cv.strategy}
    logger = runs.make_logger(
        cfg.logger.tracking_uri,
        cfg.logger.experiment_name,
        cfg.logger.artifact_location,
        run_name=f"{run_name} cv-{cfg.cv.strategy}",
        tags=tags,
    )
    monitor, classes = cfg.callbacks.monitor, list(cfg.data.classes)
    with runs.run_status(logger, trial=trial is not None):
        runs.log_config(logger, OmegaConf.to_container(cfg, resolve=True))

        def fit_fold(fold_cfg: DictConfig, fold: int, parent_run_id: str) -> FoldResult:
            fold_tags = {"mlflow.parentRunId": parent_run_id, "fold": str(fold), "cv": cfg.cv.strategy}
            return fit_run(fold_cfg, f"{run_name} fold{fold:02d}", fold_tags, trial=None).fold_result(fold)

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
    print(runs.cross_validation_summary(cfg.logger.tracking_uri, logger.run_id, summary, len(results)))
    params = results[0].metrics.get("trainable_params", float("nan"))
    return summary | {"trainable_params": params}


def log_trained_model(logger: Any, checkpoint: str, config: dict[str, Any]) -> None:
    """The run's pyfunc as its model `model` (MLflow's convention): `runs:/ID/model` predicts and serves.

    A fold of a cross-validation logs none: it is trained on a subset of the speakers and is never promoted.
    """
    from emotion.tracking.pyfunc import log_pyfunc

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        log_pyfunc(logger.run_id, Path(checkpoint), path)


@dataclass
class RunOutcome:
    """One run's results: its metrics, test predictions (class indices) and the speakers of each partition."""

    run_id: str
    metrics: dict[str, float]
    y_true: np.ndarray
    y_pred: np.ndarray
    speakers: dict[str, list[str]]
    corpora: list[str]  # the corpus of each test clip (data=mix), else empty names
    checkpoint: str = ""  # the kept checkpoint's file

    def fold_result(self, fold: int) -> FoldResult:
        return FoldResult(fold, self.run_id, self.metrics, self.y_true, self.y_pred, self.speakers, self.corpora)


def fit_run(cfg: DictConfig, run_name: str, extra_tags: dict[str, str], trial: optuna.Trial | None) -> RunOutcome:
    """Train and test one model on one split of the corpus, logged as one MLflow run."""
    pl.seed_everything(cfg.seed, workers=True)
    features: FeatureSet = instantiate(cfg.features)
    model = build_model(cfg, features, len(cfg.data.classes))
    augment = OmegaConf.to_container(cfg.augment, resolve=True) if cfg.augment else None
    datamodule: EmotionDataModule = instantiate(
        cfg.data, features=features, cache_dir=cfg.paths.cache_dir, augment=augment
    )
    datamodule.setup()
    logger = runs.make_logger(
        cfg.logger.tracking_uri,
        cfg.logger.experiment_name,
        cfg.logger.artifact_location,
        run_name=run_name,
        tags=run_tags(cfg, datamodule.leaky) | extra_tags,
    )
    with runs.run_status(logger, trial=trial is not None):
        return _fit_and_test(cfg, model, features, datamodule, logger, trial)


def _fit_and_test(
    cfg: DictConfig,
    model: nn.Module,
    features: FeatureSet,
    datamodule: EmotionDataModule,
    logger: Any,
    trial: optuna.Trial | None,
) -> RunOutcome:
    config = OmegaConf.to_container(cfg, resolve=True)
    runs.log_config(logger, config)
    table, split = datamodule.table, datamodule.split
    assert table is not None and split is not None
    trainable = count_trainable_params(model)
    speakers = {p: sorted({datamodule.clips[i].speaker for i in split.partition(p)}) for p in PARTITIONS}
    logger.log_hyperparams(
        {
            "trainable_params": trainable,
            "features_computed": table.computed,
            "features_cached": table.cached,
            "clips_skipped": len(table.skipped),
            "names_skipped": datamodule.bad_names,
            "dropped_classes": json.dumps(datamodule.dropped_classes, sort_keys=True),
            **{f"split.{p}_speakers": ",".join(speakers[p]) for p in PARTITIONS},
            **{f"split.{p}_clips": len(split.partition(p)) for p in PARTITIONS},
        }
    )
    runs.log_json(logger, split.summary(datamodule.clips), "split.json")

    module = EmotionClassifier(
        model,
        list(cfg.data.classes),
        input_shapes=features.shapes(),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None,
        label_smoothing=cfg.loss.label_smoothing,
        class_weights=datamodule.class_weights() if cfg.loss.class_weighting else None,
        mixup_alpha=cfg.loss.get("mixup_alpha", 0.0),
    )
    module.standardizer.fit(datamodule.clean_train_features())
    checkpoint, callbacks = make_callbacks(cfg, Path(cfg.paths.output_dir) / "checkpoints")
    if trial is not None and len(trial.study.directions) == 1:
        callbacks.append(pruning_callback(trial, cfg.callbacks.monitor))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=cfg.paths.output_dir
    )
    trainer.fit(module, datamodule=datamodule)
    best = checkpoint.best_model_path
    if checkpoint.best_model_score is not None:
        runs.log_best(logger, cfg.callbacks.monitor, float(checkpoint.best_model_score), checkpoint_epoch(best))
    trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
    y_true, y_pred = (t.numpy() for t in module.test_results())
    runs.log_test_report(logger.experiment, logger.run_id, y_true, y_pred, cfg.data.classes)
    corpora = [datamodule.clips[i].corpus for i in datamodule.split.test]
    if len(set(corpora)) > 1 and len(corpora) == len(y_true):  # data=mix: each corpus's test scores too
        logger.log_metrics(runs.per_corpus_scores(y_true, y_pred, corpora))
    elif len(set(corpora)) > 1:
        log.warning("no per-corpus test scores: %d of %d test clips were tested", len(y_true), len(corpora))
    if best:
        runs.log_checkpoint(logger, best)
        if cfg.logger.get("log_model", True) and "fold" not in logger.tags:
            log_trained_model(logger, best, config)
    results = {name: float(value) for name, value in trainer.callback_metrics.items()}
    if hasattr(model, "layer_weights"):  # the kept checkpoint's, which the test ran with
        weights = model.layer_weights().detach().cpu().numpy()
        layer_weights.log(logger.experiment, logger.run_id, weights, "layer weights of the kept checkpoint")
        results |= layer_weights.as_metrics(weights)
    if checkpoint.best_model_score is not None:
        results[cfg.callbacks.monitor] = float(checkpoint.best_model_score)
        results[runs.best_metric(cfg.callbacks.monitor)] = float(checkpoint.best_model_score)
    metrics = results | {"trainable_params": float(trainable)}
    return RunOutcome(logger.run_id, metrics, y_true, y_pred, speakers, corpora, best)
