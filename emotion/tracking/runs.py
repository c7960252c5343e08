"""What every training run logs to MLflow as it goes: its config, its end state, its best score and checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import yaml
from lightning.pytorch.loggers import MLFlowLogger

from emotion.errors import EmotionError
from emotion.tracking.checkpoints import CHECKPOINT_ARTIFACT_DIR
from emotion.tracking.logger import redacted
from emotion.tracking.names import ERROR_TAG, best_metric

#: MLflow keeps tag values up to this many characters.
MAX_TAG_LENGTH = 5000


@contextmanager
def run_status(logger: MLFlowLogger, trial: bool = False) -> Iterator[None]:
    """Mark the run FINISHED, or FAILED with the reason in one line (tag `error`) if the block raises (KILLED on
    Ctrl-C).

    For a sweep's trial, also tag `trial_state`: a pruned trial (optuna.TrialPruned)
    is a normal end, so its run is FINISHED with `trial_state=PRUNED`.
    """
    client, run_id = logger.experiment, logger.run_id

    def end(status: str, state: str) -> None:
        if trial:
            client.set_tag(run_id, "trial_state", state)
        client.set_terminated(run_id, status)

    try:
        yield
    except optuna.TrialPruned:
        end("FINISHED", "PRUNED")
        raise
    except KeyboardInterrupt:
        end("KILLED", "FAIL")
        raise
    except BaseException as exc:
        client.set_tag(run_id, ERROR_TAG, failure_line(exc))
        end("FAILED", "FAIL")
        raise
    end("FINISHED", "COMPLETE")


def failure_line(exc: BaseException) -> str:
    """Why a run failed, in one line: a mistake of ours by its message, anything else with its type too."""
    text = " ".join(str(exc).split())
    line = text if isinstance(exc, EmotionError) else f"{type(exc).__name__}: {text}"
    return line[:MAX_TAG_LENGTH]


def log_best(logger: MLFlowLogger, monitor: str, value: float, epoch: int | None) -> None:
    """`<monitor>_best` (and `best_epoch`) of the kept checkpoint."""
    metrics = {best_metric(monitor): value} | ({"best_epoch": float(epoch)} if epoch is not None else {})
    logger.log_metrics(metrics)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys (`model.net.channels`); lists stay whole, Hydra's `_partial_` flags are left out.

    Passwords in URLs (a storage or tracking URI given with one) are replaced by `***`.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "_partial_":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = redacted(value)
    return flat


def log_config(logger: MLFlowLogger, config: Mapping[str, Any]) -> None:
    """The resolved config as params (dotted keys) and as a `config.yaml` artifact."""
    logger.log_hyperparams(flatten(config))
    text = yaml.safe_dump(dict(config), sort_keys=False)
    logger.experiment.log_text(logger.run_id, redacted(text), "config.yaml")


def log_json(logger: MLFlowLogger, payload: Any, artifact_file: str) -> None:
    logger.experiment.log_text(logger.run_id, json.dumps(payload, indent=2), artifact_file)


def log_checkpoint(logger: MLFlowLogger, path: str | Path) -> None:
    """Upload a checkpoint file under the run's `checkpoints/` artifacts."""
    logger.experiment.log_artifact(logger.run_id, str(path), CHECKPOINT_ARTIFACT_DIR)
