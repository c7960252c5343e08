"""Promotion to the MLflow Model Registry: the leaderboard of finished runs, and moving the `champion` alias.

A promotion is all-or-nothing: the run's pyfunc is logged and registered as a new
version first, and only once that version is READY do the aliases move
(`previous` to the old champion, `champion` to the new version).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from emotion.errors import EmotionError
from emotion.models.estimator import SUFFIX as ESTIMATOR_SUFFIX
from emotion.serving.pyfunc import log_pyfunc
from emotion.tracking.checkpoints import CHECKPOINT_ARTIFACT_DIR
from emotion.tracking.names import CV_ROLE, FOLD_TAG, ROLE_TAG, STUDY_ROLE, STUDY_TAG

log = logging.getLogger(__name__)

CHAMPION = "champion"
#: A version's tag: "true" when its model carries its encoder's weights (`--with-upstream`).
UPSTREAM_TAG = "with_upstream"
PREVIOUS = "previous"


class PromotionError(EmotionError):
    """No run can be promoted, or the registry refuses."""


@dataclass(frozen=True)
class Ranking:
    """What "best" means: a metric, its direction, and which runs compete."""

    experiment: str
    metric: str = "val/uar_best"
    mode: str = "max"
    study: str | None = None
    filter: str | None = None

    def filter_string(self) -> str:
        clauses = ["attributes.status = 'FINISHED'"]
        if self.study:
            clauses.append(f"tags.study = '{self.study}'")
        if self.filter:
            clauses.append(self.filter)  # MLflow's search grammar joins clauses with `and` only
        return " and ".join(clauses)


def leaderboard(client: mlflow.MlflowClient, ranking: Ranking, limit: int = 10) -> list[Run]:
    """Finished training runs that logged the metric, best first.

    A sweep's parent run, a cross-validation's parent run (it holds no model: its folds do) and pruned trials
    are left out.
    """
    experiment = client.get_experiment_by_name(ranking.experiment)
    if experiment is None:
        raise PromotionError(f"no experiment {ranking.experiment!r} in {client.tracking_uri}")
    if ranking.mode not in ("max", "min"):
        raise PromotionError(f"mode must be max or min, not {ranking.mode!r}")
    order = "DESC" if ranking.mode == "max" else "ASC"
    try:
        found = client.search_runs(
            [experiment.experiment_id],
            ranking.filter_string(),
            order_by=[f"metrics.`{ranking.metric}` {order}", "attributes.start_time DESC"],
            max_results=max(limit * 5, 100),
        )
    except MlflowException as exc:
        raise PromotionError(f"cannot search runs with filter {ranking.filter_string()!r}: {exc.message}") from None
    competing = [
        run
        for run in found
        if ranking.metric in run.data.metrics
        and run.data.tags.get(ROLE_TAG) not in (STUDY_ROLE, CV_ROLE)
        and FOLD_TAG not in run.data.tags  # a cross-validation's fold: trained on a subset of the speakers
        and run.data.tags.get("trial_state", "COMPLETE") == "COMPLETE"
    ]
    return competing[:limit]


def cross_validation_parents(
    client: mlflow.MlflowClient, ranking: Ranking, order_by: list[str] | None = None, max_results: int = 1000
) -> list[Run]:
    """The finished cross-validations (parent runs) in `ranking`'s scope: none of them competes."""
    experiment = client.get_experiment_by_name(ranking.experiment)
    if experiment is None:
        return []
    cross_validations = ranking.filter_string() + f" and tags.{ROLE_TAG} = '{CV_ROLE}'"
    return client.search_runs([experiment.experiment_id], cross_validations, order_by=order_by, max_results=max_results)


def best_cross_validation(client: mlflow.MlflowClient, ranking: Ranking) -> Run | None:
    """The best COMPLETE cross-validated trial of `ranking`'s study (a CV parent run), if it has any."""
    order = "DESC" if ranking.mode == "max" else "ASC"
    found = cross_validation_parents(client, ranking, [f"metrics.`{ranking.metric}` {order}"], max_results=100)
    complete = [r for r in found if ranking.metric in r.data.metrics and r.data.tags.get("trial_state") == "COMPLETE"]
    return complete[0] if complete else None


def current_champion(client: mlflow.MlflowClient, name: str) -> ModelVersion | None:
    """The version holding the `champion` alias, or None (also when the model is not registered yet)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def version_tags(run: Run, metric: str, config: dict) -> dict[str, str]:
    """Where a version comes from: the run, its study, the selection metric, the protocol, data and features."""
    tags = run.data.tags
    return {
        "source_run_id": run.info.run_id,
        "source_run_name": run.info.run_name or "",
        "study": tags.get(STUDY_TAG, ""),
        "metric": metric,
        "metric_value": f"{run.data.metrics[metric]:.6g}",
        "split": tags.get("split", ""),
        "leaky": tags.get("leaky", ""),
        "architecture": tags.get("architecture", ""),
        "data": json.dumps(config.get("data", {}), sort_keys=True)[:4000],
        "features": json.dumps(config.get("features", {}), sort_keys=True)[:4000],
    }


def check_promotable(run: Run, allow_leaky: bool) -> None:
    """Refuse a run of the report's leaky protocol (its scores are inflated) unless allowed."""
    if run.data.tags.get("leaky") == "true" and not allow_leaky:
        raise PromotionError(
            f"run {run.info.run_name} ({run.info.run_id}) is tagged leaky=true: augmented copies of its test clips "
            "sat in training (the report's protocol), so its scores are inflated. Exclude such runs with "
            "--filter \"tags.leaky = 'false'\", or pass --allow-leaky to promote it anyway."
        )


def promote(
    tracking_uri: str, run: Run, name: str, metric: str, allow_leaky: bool = False, with_upstream: bool = False
) -> tuple[ModelVersion, ModelVersion | None]:
    """Register `run`'s pyfunc as a new version of `name` and make it the champion; returns (new, previous).

    If `run` is already the champion's source, nothing changes and that version is returned, unless
    `with_upstream` asks for a model that carries its encoder and the champion does not (tag `with_upstream`).
    `with_upstream`: an SSL model carries its upstream's weights too (else its name and checkpoint path).
    """
    check_promotable(run, allow_leaky)
    mlflow.set_tracking_uri(tracking_uri)  # MLflow's model logging and registration read the global URI
    client = mlflow.MlflowClient(tracking_uri)
    old = current_champion(client, name)
    if (
        old is not None
        and old.run_id == run.info.run_id
        and (old.tags.get(UPSTREAM_TAG) == "true" or not with_upstream)
    ):
        return old, None
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = download_checkpoint(client, run.info.run_id, Path(folder))
        tags = version_tags(run, metric, run_config(client, run.info.run_id, Path(folder)))
        tags[UPSTREAM_TAG] = str(with_upstream).lower()
        model_uri = None if with_upstream else trained_model_uri(client, run)
        if model_uri is None:
            model_uri = log_pyfunc(run.info.run_id, checkpoint, with_upstream)
    version = mlflow.register_model(model_uri, name, tags=tags)  # waits until the version is READY
    if version.status != "READY":
        raise PromotionError(
            f"{name} version {version.version} is {version.status}, not READY: aliases left as they were"
        )
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, old.version)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return version, old


def trained_model_uri(client: mlflow.MlflowClient, run: Run) -> str | None:
    """The model the run logged when it trained (`logger.log_model`), if it did."""
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}' AND name = 'model'"
    )
    return f"models:/{found[0].model_id}" if found else None


def download_checkpoint(client: mlflow.MlflowClient, run_id: str, folder: Path) -> Path:
    """The run's kept checkpoint (a scikit-learn head's skops file), downloaded into `folder`; PromotionError if it
    has none."""
    try:
        checkpoints = Path(client.download_artifacts(run_id, CHECKPOINT_ARTIFACT_DIR, str(folder)))
    except (MlflowException, OSError) as exc:
        raise PromotionError(f"run {run_id} lacks its checkpoint artifact: {exc}") from None
    found = sorted(path for path in checkpoints.iterdir() if path.suffix in (".ckpt", ESTIMATOR_SUFFIX))
    if not found:
        raise PromotionError(f"run {run_id} has no .ckpt (or {ESTIMATOR_SUFFIX}) under {CHECKPOINT_ARTIFACT_DIR}/")
    return found[0]


def run_config(client: mlflow.MlflowClient, run_id: str, folder: Path) -> dict:
    """The run's resolved `config.yaml` (what its registered version's tags describe); empty if it has none."""
    try:
        return yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml", str(folder))).read_text())
    except (MlflowException, OSError):
        return {}


def require_store(tracking_uri: str) -> None:
    """EmotionError if `tracking_uri` is a SQLite file that does not exist: opening it would create an empty store.

    (Commands that only read or promote runs must never make a store; a missing one means the wrong place.)
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    if not path.is_file():
        raise EmotionError(
            f"no MLflow store at {path} ({tracking_uri}): train a run first, or point to your store with "
            "--tracking-uri or MLFLOW_TRACKING_URI"
        )


def study_names(client: mlflow.MlflowClient, experiment: str) -> list[str]:
    """The Optuna studies that have a parent run in `experiment`."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], f"tags.{ROLE_TAG} = '{STUDY_ROLE}'")
    return sorted({run.data.tags[STUDY_TAG] for run in runs if STUDY_TAG in run.data.tags})


_REGISTERED_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")


def check_model_uri(client: mlflow.MlflowClient, uri: str) -> None:
    """For a `models:/NAME@ALIAS` or `models:/NAME/VERSION` URI: PromotionError saying what is missing."""
    match = _REGISTERED_URI.match(uri)
    if match is None or match["name"].startswith("m-"):  # a path, runs:/ URI or logged model ID
        return
    name, alias, number = match["name"], match["alias"], match["version"]
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models()) or "none"
        raise PromotionError(
            f"no registered model {name!r} in {client.tracking_uri} (registered: {known}); "
            "promote a run first with emotion-promote"
        ) from None
    if alias is not None and alias not in model.aliases:
        raise PromotionError(f"model {name!r} has no alias {alias!r} (its aliases: {sorted(model.aliases) or 'none'})")
    if number is not None and number != "latest":
        try:
            client.get_model_version(name, number)
        except MlflowException:
            raise PromotionError(f"model {name!r} has no version {number}") from None
