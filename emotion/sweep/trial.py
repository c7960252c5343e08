"""The job side of a sweep: reattach to the Optuna trial the sweeper asked for, and report to it.

The sweeper passes `+trial.storage`, `+trial.study_name`, `+trial.number` and
`+trial.parent_run_id` to every job, so a job reattaches through the study storage
whether it runs in the sweeper's process, another process, or another machine.
"""

from __future__ import annotations

import optuna
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import DictConfig
from optuna_integration import PyTorchLightningPruningCallback


def load_trial(link: DictConfig, pruner: DictConfig | None) -> optuna.Trial:
    """The running trial `link.number` of study `link.study_name` in `link.storage`."""
    storage = optuna.storages.get_storage(link.storage)
    study = optuna.load_study(
        study_name=link.study_name, storage=storage, pruner=instantiate(pruner) if pruner else None
    )
    study_id = storage.get_study_id_from_name(link.study_name)
    return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, int(link.number)))


def pruning_callback(trial: optuna.Trial, monitor: str) -> Callback:
    """Reports `monitor` to the trial after every validation and stops the fit, PRUNED, when the pruner says so."""
    return PyTorchLightningPruningCallback(trial, monitor=monitor)


def trial_run_name(base: str, number: int) -> str:
    """MLflow run name of a trial: `cnn2d-logmel-synthetic t07`."""
    return f"{base} t{number:02d}"
