"""The MLflow parent run of an Optuna study: settings, running best, all trials, and Optuna's plots.

Each trial's own run is a child of it (tag `mlflow.parentRunId`), so the MLflow UI
nests a study's trials under one row.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import optuna
from optuna.trial import TrialState

from emotion.tracking.logger import experiment_artifact_location
from emotion.tracking.names import ROLE_TAG, STUDY_ROLE, STUDY_TAG, TRIAL_TAG
from emotion.tracking.reports import TIGHT

log = logging.getLogger(__name__)


def open_study_run(
    tracking_uri: str, experiment_name: str, artifact_location: str, study: optuna.Study, settings: Mapping[str, str]
) -> str:
    """The parent run of `study`: the one an earlier sweep of the same study made, or a new one."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            experiment_name, artifact_location=experiment_artifact_location(tracking_uri, artifact_location)
        )
    )
    found = client.search_runs(
        [experiment_id], f"tags.{STUDY_TAG} = '{study.study_name}' and tags.{ROLE_TAG} = 'study'", max_results=1
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, "RUNNING")
        return run_id
    run = client.create_run(
        experiment_id, run_name=f"study {study.study_name}", tags={STUDY_TAG: study.study_name, ROLE_TAG: STUDY_ROLE}
    )
    for key, value in settings.items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def trial_run_ids(tracking_uri: str, experiment_name: str, study_name: str) -> dict[int, str]:
    """The MLflow run ID of each trial of `study_name`, by trial number."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return {}
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.{STUDY_TAG} = '{study_name}' and tags.trial_number != ''"
    )
    return {int(run.data.tags[TRIAL_TAG]): run.info.run_id for run in runs}


def fail_orphaned_trial_runs(tracking_uri: str, experiment_name: str, study_name: str, numbers: list[int]) -> None:
    """Mark FAILED the child runs of trials that died with their sweep, as the study marks the trials.

    A run killed mid-training would stay RUNNING forever; one whose job finished just before its sweep
    died is FINISHED, but its result never reached the study. The study is the record, so both end FAILED.
    """
    if not numbers:  # the sweeper asks before every trial: no call to the tracking server then
        return
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return
    for run in client.search_runs([experiment.experiment_id], f"tags.{STUDY_TAG} = '{study_name}'"):
        if run.data.tags.get(TRIAL_TAG) in {str(n) for n in numbers}:
            client.set_tag(run.info.run_id, "trial_state", "FAIL")
            client.set_terminated(run.info.run_id, "FAILED")
            _fail_running_children(client, experiment.experiment_id, run.info.run_id)


def _fail_running_children(client: mlflow.MlflowClient, experiment_id: str, run_id: str) -> None:
    """Mark FAILED the fold runs a cross-validating trial left RUNNING when it died."""
    running = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'"
    )
    for child in running:
        client.set_terminated(child.info.run_id, "FAILED")


def log_study_progress(tracking_uri: str, run_id: str, study: optuna.Study, objectives: list[str]) -> None:
    """Running best value (a metric per finished trial), best params as tags, and `trials.csv`."""
    client = mlflow.MlflowClient(tracking_uri)
    finished = [t for t in study.trials if t.state.is_finished()]
    completed = [t for t in finished if t.state == TrialState.COMPLETE]
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        client.log_metric(
            run_id, f"study/{state.name.lower()}_trials", sum(t.state == state for t in finished), step=len(finished)
        )
    if completed and len(objectives) == 1:
        best = study.best_trial
        client.log_metric(run_id, f"study/best_{objectives[0]}", best.value, step=len(finished))
        client.set_tag(run_id, "best_trial", str(best.number))
        for name, value in best.params.items():
            client.set_tag(run_id, f"best.{name}", str(value))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trials.csv"
        study.trials_dataframe().to_csv(path, index=False)
        client.log_artifact(run_id, str(path))


def log_study_plots(tracking_uri: str, run_id: str, study: optuna.Study, objectives: list[str]) -> None:
    """Optuna's plots as PNG (matplotlib) and one HTML page (plotly): history, importances, parallel coordinates,
    and intermediate values (one objective) or the Pareto front (several; the other plots show the first)."""
    client = mlflow.MlflowClient(tracking_uri)
    target, target_name = (None, objectives[0]) if len(objectives) == 1 else (lambda t: t.values[0], objectives[0])
    plots = _plots(target, target_name)
    if len(objectives) > 1:  # their trials report no intermediate values (nothing to prune)
        del plots["intermediate_values"]
        plots |= _pareto_plot(objectives)
    html_parts: list[str] = []
    for name, (matplotlib_plot, plotly_plot) in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = matplotlib_plot(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            client.log_figure(run_id, figure, f"plots/{name}.png", save_kwargs=TIGHT)
            html_parts.append(plotly_plot(study).to_html(full_html=False, include_plotlyjs=not html_parts))
        except (ValueError, RuntimeError, ImportError) as exc:  # too few trials for this plot
            log.info("no %s plot: %s", name, exc)
    if html_parts:
        client.log_text(run_id, "<html><body>" + "\n".join(html_parts) + "</body></html>", "plots/study.html")


def _plots(target: Callable | None, target_name: str) -> dict[str, tuple[Callable, Callable]]:
    from optuna import visualization as plotly
    from optuna.visualization import matplotlib

    def with_target(plot: Callable) -> Callable:
        return lambda study: plot(study, target=target, target_name=target_name)

    return {
        "optimization_history": (
            with_target(matplotlib.plot_optimization_history),
            with_target(plotly.plot_optimization_history),
        ),
        "param_importances": (
            with_target(matplotlib.plot_param_importances),
            with_target(plotly.plot_param_importances),
        ),
        "parallel_coordinate": (
            with_target(matplotlib.plot_parallel_coordinate),
            with_target(plotly.plot_parallel_coordinate),
        ),
        "intermediate_values": (matplotlib.plot_intermediate_values, plotly.plot_intermediate_values),
    }


def _pareto_plot(objectives: list[str]) -> dict[str, tuple[Callable, Callable]]:
    from optuna import visualization as plotly
    from optuna.visualization import matplotlib

    def front(plot: Callable) -> Callable:
        return lambda study: plot(study, target_names=objectives)

    return {"pareto_front": (front(matplotlib.plot_pareto_front), front(plotly.plot_pareto_front))}


def pareto_front_table(study: optuna.Study, objectives: list[str], trial_runs: Mapping[int, str]) -> str:
    """The trials on the Pareto front of a multi-objective study as a Markdown table, best first objective first:
    number, objectives, parameters and MLflow run."""
    front = sorted(study.best_trials, key=lambda t: t.values[0], reverse=study.directions[0].name == "MAXIMIZE")
    params = sorted({name for trial in front for name in trial.params})
    lines = [
        "| trial | " + " | ".join([*objectives, *params]) + " | MLflow run |",
        "|" + "---|" * (len(objectives) + len(params) + 2),
    ]
    for trial in front:
        values = [f"{value:.4g}" for value in trial.values] + [str(trial.params.get(name, "")) for name in params]
        lines.append(f"| {trial.number} | " + " | ".join(values) + f" | {trial_runs.get(trial.number, '?')} |")
    return "\n".join(lines) + "\n"


def log_pareto_front(
    tracking_uri: str, run_id: str, study: optuna.Study, objectives: list[str], trial_runs: Mapping[int, str]
) -> None:
    """The Pareto front's trials as `pareto_front.md` on the study's run (a multi-objective study with a complete
    trial), and how many they are (`study/pareto_trials`)."""
    if len(objectives) < 2 or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    client = mlflow.MlflowClient(tracking_uri)
    client.log_text(run_id, pareto_front_table(study, objectives, trial_runs), "pareto_front.md")
    client.log_metric(run_id, "study/pareto_trials", len(study.best_trials))


def close_study_run(tracking_uri: str, run_id: str) -> None:
    mlflow.MlflowClient(tracking_uri).set_terminated(run_id, "FINISHED")


def settings_params(study: optuna.Study, sampler: Any, pruner: Any, space: Mapping[str, Any]) -> dict[str, str]:
    """The study's settings, logged once as params of its parent run."""
    return {
        "study_name": study.study_name,
        "sampler": type(sampler).__name__,
        "pruner": type(pruner).__name__,
        "directions": ",".join(d.name.lower() for d in study.directions),
        "search_space": json.dumps({k: repr(v) for k, v in space.items()})[:6000],
    }
