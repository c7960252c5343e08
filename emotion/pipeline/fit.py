"""One training run on one split of the corpus: build, fit, test and log it to MLflow (`fit_run`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from omegaconf import DictConfig, OmegaConf

from emotion.data.datamodule import EmotionDataModule
from emotion.data.features import FeatureSet
from emotion.data.splits import PARTITIONS
from emotion.models.estimator import ScikitLearnHead
from emotion.models.module import EmotionClassifier, count_trainable_params
from emotion.models.network import layer_weights_of
from emotion.pipeline.build import (
    build_callbacks,
    build_datamodule,
    build_logger,
    build_module,
    built,
    checkpoint_epoch,
    run_tags,
)
from emotion.pipeline.cost import log_cost, measure_cost
from emotion.pipeline.estimator import fit_estimator, save_head
from emotion.sweep.trial import SweepTrial
from emotion.tracking import layer_weights, reports, runs
from emotion.tracking.cv import FoldResult
from emotion.tracking.names import FOLD_TAG, best_metric

#: The most speakers a `split.<partition>_speakers` param names (a corpus of 91 speakers: its count instead).
SPEAKERS_IN_PARAM = 20

log = logging.getLogger(__name__)


def log_trained_model(logger: Any, checkpoint: str) -> None:
    """The run's pyfunc as its model `model` (MLflow's convention): `runs:/ID/model` predicts and serves.

    Unless `logger.log_model` is off, or the run is a fold of a cross-validation: a fold is trained on a subset of
    the speakers and is never promoted.
    """
    from emotion.serving.pyfunc import log_pyfunc

    if logger.log_trained_model and FOLD_TAG not in logger.tags:
        log_pyfunc(logger.run_id, Path(checkpoint))


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


def fit_run(cfg: DictConfig, run_name: str, extra_tags: dict[str, str], trial: SweepTrial | None) -> RunOutcome:
    """Train and test one model on one split of the corpus, logged as one MLflow run."""
    pl.seed_everything(cfg.seed, workers=True)
    features: FeatureSet = built(cfg.features)
    module = build_module(cfg, features)  # before the datamodule reads: the net's initial weights follow the seed
    datamodule = build_datamodule(cfg, features)
    datamodule.setup()
    logger = build_logger(cfg, run_name, run_tags(cfg, datamodule.leaky) | extra_tags)
    with runs.run_status(logger, trial=trial is not None):
        if isinstance(module, ScikitLearnHead):
            outcome = _fit_estimator_and_test(cfg, module, datamodule, logger)
        else:
            outcome = _fit_and_test(cfg, module, features, datamodule, logger, trial)
        if FOLD_TAG not in extra_tags:  # a cross-validation measures once, on its first fold's model
            outcome.metrics |= log_cost(logger, measure_cost(cfg, trial, outcome.checkpoint, datamodule.clips))
        return outcome


def _log_inputs(cfg: DictConfig, datamodule: EmotionDataModule, logger: Any) -> dict[str, list[str]]:
    """The run's config, what the cache did, and its split (params and `split.json`); the speakers of each
    partition."""
    runs.log_config(logger, OmegaConf.to_container(cfg, resolve=True))
    table, split = datamodule.table, datamodule.split
    assert table is not None and split is not None
    speakers = {p: sorted({datamodule.clips[i].speaker for i in split.partition(p)}) for p in PARTITIONS}
    logger.log_hyperparams(
        {
            "features_computed": table.computed,
            "features_cached": table.cached,
            "clips_skipped": len(table.skipped),
            "names_skipped": datamodule.bad_names,
            "dropped_classes": json.dumps(datamodule.dropped_classes, sort_keys=True),
            **{f"split.{p}_speakers": speakers_param(speakers[p]) for p in PARTITIONS},
            **{f"split.{p}_clips": len(split.partition(p)) for p in PARTITIONS},
        }
    )
    runs.log_json(logger, split.summary(datamodule.clips), "split.json")
    return speakers


def speakers_param(speakers: list[str]) -> str:
    """A partition's speakers as a param: their names, or up from `SPEAKERS_IN_PARAM` of them, how many (every
    name is in the run's `split.json`, which `emotion-evaluate` reads)."""
    if len(speakers) <= SPEAKERS_IN_PARAM:
        return ",".join(speakers)
    return f"{len(speakers)} speakers (split.json)"


def _test_corpora(datamodule: EmotionDataModule) -> list[str]:
    assert datamodule.split is not None
    return [datamodule.clips[i].corpus for i in datamodule.split.test]


def _fit_estimator_and_test(
    cfg: DictConfig, spec: ScikitLearnHead, datamodule: EmotionDataModule, logger: Any
) -> RunOutcome:
    """A scikit-learn head's run (`emotion.pipeline.estimator`): its skops file is the run's checkpoint."""
    speakers = _log_inputs(cfg, datamodule, logger)
    head, metrics, y_true, y_pred = fit_estimator(spec, datamodule, logger, cfg.monitor)
    path = save_head(head, spec.hparams["recipe"], cfg.paths.output_dir)
    runs.log_checkpoint(logger, path)
    log_trained_model(logger, str(path))
    return RunOutcome(logger.run_id, metrics, y_true, y_pred, speakers, _test_corpora(datamodule), str(path))


def _fit_and_test(
    cfg: DictConfig,
    module: EmotionClassifier,
    features: FeatureSet,
    datamodule: EmotionDataModule,
    logger: Any,
    trial: SweepTrial | None,
) -> RunOutcome:
    speakers = _log_inputs(cfg, datamodule, logger)
    model = module.model
    trainable = count_trainable_params(model)
    logger.log_hyperparams({"trainable_params": trainable})

    module.normalizer = datamodule.normalizer  # the `normalize` stage, fitted: the trained model carries it
    if datamodule.normalizer.mode != "none":
        module.standardizer.fit(datamodule.clean_train_features())
    checkpoint, callbacks = build_callbacks(cfg)
    callbacks += trial.callbacks(cfg.monitor) if trial else []
    trainer: pl.Trainer = built(cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=cfg.paths.output_dir)
    trainer.fit(module, datamodule=datamodule)
    best = checkpoint.best_model_path
    if checkpoint.best_model_score is not None:
        runs.log_best(logger, cfg.monitor, float(checkpoint.best_model_score), checkpoint_epoch(best))
    trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
    y_true, y_pred = (t.numpy() for t in module.test_results())
    reports.log_test_report(logger.experiment, logger.run_id, y_true, y_pred, cfg.data.classes)
    corpora = _test_corpora(datamodule)
    if len(set(corpora)) > 1 and len(corpora) == len(y_true):  # data=mix: each corpus's test scores too
        logger.log_metrics(reports.per_corpus_scores(y_true, y_pred, corpora))
    elif len(set(corpora)) > 1:
        log.warning("no per-corpus test scores: %d of %d test clips were tested", len(y_true), len(corpora))
    if best:
        runs.log_checkpoint(logger, best)
        log_trained_model(logger, best)
    results = {name: float(value) for name, value in trainer.callback_metrics.items()}
    weights = layer_weights_of(model)  # the kept checkpoint's, which the test ran with
    if weights is not None:
        weights = weights.detach().cpu().numpy()
        layer_weights.log(logger.experiment, logger.run_id, weights, "layer weights of the kept checkpoint")
        results |= layer_weights.as_metrics(weights)
    if checkpoint.best_model_score is not None:
        results[cfg.monitor] = float(checkpoint.best_model_score)
        results[best_metric(cfg.monitor)] = float(checkpoint.best_model_score)
    metrics = results | {"trainable_params": float(trainable)}
    return RunOutcome(logger.run_id, metrics, y_true, y_pred, speakers, corpora, best)
