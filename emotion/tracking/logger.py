"""The MLflow logger of training runs (the `logger` config group's `_target_`), and access to its store."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.exceptions import MlflowException

from emotion.errors import EmotionError


class RunLogger(MLFlowLogger):
    """Lightning's MLFlowLogger for one run: a new experiment keeps its artifacts under `artifact_location`, a
    refused login is one line, and `log_model` says whether the run logs its pyfunc model as it trains.

    (Lightning's own `log_model` would log checkpoints as artifacts: the pipeline logs the kept one itself.)
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        artifact_location: str,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        log_model: bool = True,
    ) -> None:
        check_server_access(tracking_uri)
        location = experiment_artifact_location(tracking_uri, artifact_location)
        ensure_experiment(tracking_uri, experiment_name, location)
        super().__init__(
            experiment_name=experiment_name,
            tracking_uri=tracking_uri,
            run_name=run_name,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            artifact_location=location,
            log_model=False,
        )
        self.log_trained_model = log_model


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> None:
    """Create the experiment `name` if the store lacks it (Lightning's logger would, with a warning each time)."""
    client = mlflow.MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as exc:  # another worker created it in between
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def experiment_artifact_location(tracking_uri: str, location: str) -> str | None:
    """Where a new experiment keeps its artifacts: the server's choice for a tracking server, else `location`.

    A tracking server shares its own artifact store with every worker (`mlflow server --artifacts-destination`);
    a folder here would be a folder on one worker's disk.
    """
    return None if tracking_uri.startswith(("http://", "https://")) else artifact_uri(location)


def check_server_access(tracking_uri: str) -> None:
    """EmotionError in one line if an MLflow server refuses this process's credentials (or their absence)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        mlflow.MlflowClient(tracking_uri).search_experiments(max_results=1)
    except MlflowException as exc:
        if any(code in str(exc) for code in ("401", "403", "Unauthorized", "Permission denied")):
            raise EmotionError(
                f"the MLflow server at {redacted(tracking_uri)} refused the credentials "
                "(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD: `emotion-team env` prints them)"
            ) from None
        raise


def artifact_uri(location: str) -> str:
    """An artifact location as a URI: local folders become absolute `file://` URIs."""
    return location if "://" in location else Path(location).expanduser().resolve().as_uri()


#: The password of a URL (`scheme://user:password@host`).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@/\s]+@", re.IGNORECASE)


def redacted(value: Any) -> Any:
    """`value` with the password of any URL in it replaced by `***` (other values unchanged)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", value) if isinstance(value, str) else value
