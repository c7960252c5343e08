"""The job side of a sweep: reattach to the Optuna trial the sweeper asked for, and report to it.

The sweeper passes `+trial.storage`, `+trial.study_name`, `+trial.number` and
`+trial.parent_run_id` to every job, so a job reattaches through the study storage
whether it runs in the sweeper's process, another process, or another machine.
The training pipeline sees a `SweepTrial` only: its tags, run name, callbacks and fold reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import DictConfig
from optuna_integration import PyTorchLightningPruningCallback

from emotion.tracking.names import STUDY_TAG, TRIAL_TAG


def load_trial(link: DictConfig, pruner: DictConfig | None) -> optuna.Trial:
    """The running trial `link.number` of study `link.study_name` in `link.storage`."""
    storage = optuna.storages.get_storage(link.storage)
    study = optuna.load_study(
        study_name=link.study_name, storage=storage, pruner=instantiate(pruner) if pruner else None
    )
    study_id = storage.get_study_id_from_name(link.study_name)
    return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, int(link.number)))


def trial_run_name(base: str, number: int) -> str:
    """MLflow run name of a trial: `cnn2d-logmel-synthetic t07`."""
    return f"{base} t{number:02d}"


class PrunedBetweenFolds(optuna.TrialPruned):
    """The pruner stopped a cross-validated trial between folds; `results` are the folds it ran."""

    def __init__(self, results: Sequence[Any]) -> None:
        super().__init__(f"pruned after {len(results)} folds")
        self.results = list(results)


class SweepTrial:
    """The trial a job of an Optuna sweep runs, as the training pipeline uses it."""

    def __init__(self, trial: optuna.Trial, link: DictConfig) -> None:
        self.trial = trial
        self.link = link

    @classmethod
    def of(cls, cfg: DictConfig) -> SweepTrial | None:
        """The trial of a sweep's job (its config has `trial`), else None."""
        if not cfg.get("trial"):
            return None
        pruner = HydraConfig.get().sweeper.get("pruner") if HydraConfig.initialized() else None
        return cls(load_trial(cfg.trial, pruner), cfg.trial)

    @property
    def single_objective(self) -> bool:
        return len(self.trial.study.directions) == 1

    def tags(self) -> dict[str, str]:
        """The run's place in the study: its parent (the study's run), study name and trial number."""
        return {
            "mlflow.parentRunId": self.link.parent_run_id,
            STUDY_TAG: self.link.study_name,
            TRIAL_TAG: str(self.trial.number),
        }

    @property
    def number(self) -> int:
        return self.trial.number

    def shared(self, key: str) -> Any:
        """What a trial of this study recorded under `key` (`share`), or None."""
        return self.trial.study.user_attrs.get(key)

    def share(self, key: str, value: Any) -> None:
        """Record `value` (JSON) under `key` for the study's later trials, whatever worker runs them."""
        self.trial.study.set_user_attr(key, value)

    def run_name(self, base: str) -> str:
        return trial_run_name(base, self.trial.number)

    def callbacks(self, monitor: str) -> list[Callback]:
        """Reports `monitor` after every validation and stops the fit, PRUNED, when the pruner says so."""
        return [PyTorchLightningPruningCallback(self.trial, monitor=monitor)] if self.single_objective else []

    def report_folds(self, results: Sequence[Any], values: Sequence[float], last: bool) -> None:
        """Report the running mean of the folds' `values` (step = folds done); PrunedBetweenFolds if the pruner
        says so, except after the `last` fold (the trial is complete then)."""
        if not self.single_objective:
            return
        self.trial.report(float(np.mean(values)), step=len(values) - 1)
        if not last and self.trial.should_prune():
            raise PrunedBetweenFolds(results)
