"""MLflow runs of training jobs: the logger, the config as params, and the test artifacts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import yaml
from lightning.pytorch.loggers import MLFlowLogger
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from sklearn.metrics import classification_report, confusion_matrix

from emotion.errors import EmotionError
from emotion.metrics import scores_by_corpus
from emotion.tracking.checkpoints import CHECKPOINT_ARTIFACT_DIR

#: Save figures with their legends and colour bars inside the image.
TIGHT = {"bbox_inches": "tight", "dpi": 110}


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


def make_logger(
    tracking_uri: str,
    experiment_name: str,
    artifact_location: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> MLFlowLogger:
    """A Lightning MLFlowLogger; a new experiment stores its artifacts under `artifact_location`."""
    check_server_access(tracking_uri)
    return MLFlowLogger(
        experiment_name=experiment_name,
        tracking_uri=tracking_uri,
        run_name=run_name,
        tags=dict(tags or {}),
        artifact_location=experiment_artifact_location(tracking_uri, artifact_location),
        log_model=False,
    )


@contextmanager
def run_status(logger: MLFlowLogger, trial: bool = False) -> Iterator[None]:
    """Mark the run FINISHED, or FAILED if the block raises (KILLED on Ctrl-C).

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
    except BaseException:
        end("FAILED", "FAIL")
        raise
    end("FINISHED", "COMPLETE")


def best_metric(monitor: str) -> str:
    """The name under which a run logs the best value of its monitored metric: `val/uar` -> `val/uar_best`.

    That is the value of the checkpoint the run keeps (and a sweep's trial returns), the one to rank runs by:
    the monitored metric's own last value is its last epoch's.
    """
    return f"{monitor}_best"


def log_best(logger: MLFlowLogger, monitor: str, value: float, epoch: int | None) -> None:
    """`<monitor>_best` (and `best_epoch`) of the kept checkpoint."""
    metrics = {best_metric(monitor): value} | ({"best_epoch": float(epoch)} if epoch is not None else {})
    logger.log_metrics(metrics)


#: The password of a URL (`scheme://user:password@host`).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@/\s]+@", re.IGNORECASE)


def redacted(value: Any) -> Any:
    """`value` with the password of any URL in it replaced by `***` (other values unchanged)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", value) if isinstance(value, str) else value


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys (`model.channels`); lists stay whole, Hydra's `_partial_` flags are left out.

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


def plot_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> Figure:
    """Counts and row-normalised (recall) confusion matrices side by side."""
    counts = confusion_matrix(y_true, y_pred, labels=range(len(classes)))
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(12, 5.2), constrained_layout=True)
    axes = figure.subplots(1, 2)
    for ax, matrix, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], recall, "row-normalised", ".2f")):
        image = ax.imshow(matrix, cmap="Blues", vmin=0)
        ax.set(
            xticks=range(len(classes)),
            yticks=range(len(classes)),
            xticklabels=classes,
            yticklabels=classes,
            xlabel="predicted",
            ylabel="true",
            title=f"Confusion matrix ({title})",
        )
        ax.tick_params(axis="x", rotation=45)
        threshold = matrix.max() / 2
        for (row, col), value in np.ndenumerate(matrix):
            ax.text(
                col, row, format(value, fmt), ha="center", va="center", color="white" if value > threshold else "black"
            )
        figure.colorbar(image, ax=ax, shrink=0.8)
    return figure


def log_test_report(
    client: mlflow.MlflowClient, run_id: str, y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> None:
    """`confusion_matrix.{png,json}` and `classification_report.{json,txt}` of a run's test predictions."""
    labels = list(range(len(classes)))
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    client.log_text(run_id, json.dumps({"classes": list(classes), "counts": counts.tolist()}), "confusion_matrix.json")
    report = dict(labels=labels, target_names=list(classes), zero_division=0)
    client.log_text(run_id, classification_report(y_true, y_pred, digits=3, **report), "classification_report.txt")
    as_dict = classification_report(y_true, y_pred, output_dict=True, **report)
    client.log_text(run_id, json.dumps(as_dict, indent=2), "classification_report.json")
    figure = plot_confusion_matrix(y_true, y_pred, classes)
    client.log_figure(run_id, figure, "confusion_matrix.png", save_kwargs=TIGHT)


def per_corpus_scores(y_true: np.ndarray, y_pred: np.ndarray, corpora: Sequence[str]) -> dict[str, float]:
    """`test/{acc,uar,f1}/CORPUS` of each corpus's test clips (UAR and F1 over the classes it has)."""
    by_corpus = scores_by_corpus(y_true, y_pred, corpora)
    return {f"test/{name}/{corpus}": value for corpus, values in by_corpus.items() for name, value in values.items()}


def log_checkpoint(logger: MLFlowLogger, path: str | Path) -> None:
    """Upload a checkpoint file under the run's `checkpoints/` artifacts."""
    logger.experiment.log_artifact(logger.run_id, str(path), CHECKPOINT_ARTIFACT_DIR)


#: Where `make ui` serves the MLflow UI of the project's SQLite store.
LOCAL_UI = "http://127.0.0.1:5000"


def ui_link(tracking_uri: str, run_id: str) -> str:
    """The run's page in the MLflow UI: the server's own, or that of `make ui` for a local store."""
    experiment = mlflow.MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base}/#/experiments/{experiment}/runs/{run_id}"


def run_summary(tracking_uri: str, run_id: str, metrics: Mapping[str, float], checkpoint: str) -> str:
    """What a finished run printed last: its ID and UI page, its kept checkpoint, its test scores."""
    scores = ", ".join(f"{name} {metrics[f'test/{key}']:.4f}" for key, name in TEST_NAMES if f"test/{key}" in metrics)
    best = next((f"{name} {value:.4f}" for name, value in metrics.items() if name.endswith("_best")), "")
    lines = [f"run {run_id}: {ui_link(tracking_uri, run_id)}"]
    if checkpoint:
        lines.append(
            f"  best checkpoint ({best}): {checkpoint} (artifact {CHECKPOINT_ARTIFACT_DIR}/{Path(checkpoint).name})"
        )
    lines.append(f"  test: {scores}")
    return "\n".join(lines)


def cross_validation_summary(tracking_uri: str, run_id: str, summary: Mapping[str, float], folds: int) -> str:
    """What a finished cross-validation printed last: the parent run's ID and page, and its test scores."""
    scores = ", ".join(
        f"{name} {summary[f'test/{key}_mean']:.4f} ± {summary[f'test/{key}_std']:.4f} "
        f"(pooled {summary[f'test/{key}_pooled']:.4f})"
        for key, name in TEST_NAMES
    )
    return "\n".join(
        [
            f"cross-validation run {run_id} ({folds} folds, each a child run): {ui_link(tracking_uri, run_id)}",
            f"  test over folds: {scores}",
        ]
    )


#: The test metrics a run's summary names, and how.
TEST_NAMES = (("acc", "acc"), ("uar", "UAR"), ("f1", "macro-F1"))
