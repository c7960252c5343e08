"""Optuna sweeps as Hydra multiruns: real studies in SQLite, real MLflow stores, real `emotion-train --multirun`."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import mlflow
import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from emotion.errors import ConfigError
from emotion.sweep.search_space import parse_search_space
from emotion.sweep.sweeper import StudySweep
from emotion.sweep.sweeper import _tell as tell
from tests.conftest import TINY_CORPUS

QUICK = [
    *(f"data.synthetic.{k}={v}" for k, v in TINY_CORPUS.items()),
    "model.net.channels=[8,8,8]",
    "+trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger.log_model=false",  # promotion logs the winner's model; tests of runs:/ID/model are elsewhere
]


#: Trials on a wide learning-rate range, judged by val/loss: on a 72-clip corpus val/uar ties at chance level.
BY_VAL_LOSS = [
    "model.optimizer.lr=tag(log,interval(1e-5,3e-2))",
    "monitor=val/loss",
    "mode=min",
    "hydra.sweeper.direction=minimize",
    "hydra.sweeper.objectives=[val/loss]",
]


def sweep_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "emotion.cli.train", "--multirun", *QUICK, *overrides]


def environment(tmp_path: Path, cache_dir: Path) -> dict[str, str]:
    return {**os.environ, "EMOTION_CACHE_DIR": str(cache_dir), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns.db"}


def run_sweep(tmp_path: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        sweep_command(*overrides),
        cwd=tmp_path,
        env=environment(tmp_path, cache_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def load_study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/multirun/{name}/optuna.db")


def child_runs(tmp_path: Path, study: str) -> dict[int, mlflow.entities.Run]:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.get_experiment_by_name("emotion")
    runs = client.search_runs([experiment.experiment_id], f"tags.study = '{study}' and tags.trial_number != ''")
    numbers = [int(r.data.tags["trial_number"]) for r in runs]
    assert len(numbers) == len(set(numbers)), "a trial has two MLflow runs"
    return {int(r.data.tags["trial_number"]): r for r in runs}


def parent_run(tmp_path: Path, study: str) -> mlflow.entities.Run:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    (run,) = client.search_runs(["1"], f"tags.study = '{study}' and tags.role = 'study'")
    return run


def test_a_pruned_sweep_logs_one_child_run_per_trial_under_the_study_run(tmp_path: Path, cache_dir: Path) -> None:
    run_sweep(
        tmp_path,
        cache_dir,
        "sweep=cnn2d_logmel",
        "hydra.sweeper.n_trials=8",
        "trainer.max_epochs=4",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        *BY_VAL_LOSS,
    )
    study = load_study(tmp_path, "cnn2d_logmel")
    states = [t.state for t in study.trials]
    assert len(states) == 8
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    pruned = next(t for t in study.trials if t.state == TrialState.PRUNED)
    assert len(pruned.intermediate_values) < 4  # it stopped before its last epoch

    children = child_runs(tmp_path, "cnn2d_logmel")
    parent = parent_run(tmp_path, "cnn2d_logmel")
    assert sorted(children) == [t.number for t in study.trials]
    for trial in study.trials:
        child = children[trial.number]
        assert child.data.tags["trial_state"] == trial.state.name
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.run_name == f"cnn2d-logmel-synthetic t{trial.number:02d}"
        assert child.data.params["model.optimizer.lr"] == str(trial.params["model.optimizer.lr"])
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "trials.csv" in artifacts
    assert {f"plots/{p}.png" for p in ("optimization_history", "intermediate_values", "parallel_coordinate")} <= plots
    assert "plots/study.html" in plots
    assert parent.data.params["pruner"] == "MedianPruner" and parent.data.params["sampler"] == "RandomSampler"
    assert parent.data.metrics["study/best_val/loss"] == pytest.approx(study.best_value)
    assert parent.data.tags["best_trial"] == str(study.best_trial.number)


def study_created(db: Path) -> bool:
    """Whether the sweeper has created its study, asked without writing.

    Opening the storage with Optuna while the sweeper creates it would race it to write the schema.
    """
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            return bool(connection.execute("SELECT count(*) FROM studies").fetchone()[0])
    except sqlite3.Error:
        return False


def test_a_killed_sweep_resumes_to_a_larger_budget_with_finished_trials_intact_and_new_parameters(
    tmp_path: Path, cache_dir: Path
) -> None:
    overrides = ["sweep=cnn2d_logmel", "trainer.max_epochs=5", "hydra/sweeper/pruner=none"]
    storage = f"sqlite:///{tmp_path}/multirun/cnn2d_logmel/optuna.db"
    process = subprocess.Popen(
        sweep_command(*overrides, "hydra.sweeper.n_trials=4"),
        cwd=tmp_path,
        env=environment(tmp_path, cache_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if not study_created(tmp_path / "multirun" / "cnn2d_logmel" / "optuna.db"):
                continue
            try:
                trials = optuna.load_study(study_name="cnn2d_logmel", storage=storage).trials
            except (KeyError, optuna.exceptions.StorageInternalError, ValueError):
                continue  # the study is not created yet
            training = bool(trials) and trials[-1].state == TrialState.RUNNING and trials[-1].intermediate_values
            if any(t.state == TrialState.COMPLETE for t in trials) and training:
                break  # killed mid-trial: after it reported its first epoch
        else:
            pytest.fail("the sweep never reached a second trial")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = {
        t.number: t.value
        for t in optuna.load_study(study_name="cnn2d_logmel", storage=storage).trials
        if t.state == TrialState.COMPLETE
    }
    interrupted = max(t.number for t in load_study(tmp_path, "cnn2d_logmel").trials)

    run_sweep(tmp_path, cache_dir, *overrides, "hydra.sweeper.n_trials=5")

    study = load_study(tmp_path, "cnn2d_logmel")
    assert len(study.trials) == 5
    assert {t.number: t.value for t in study.trials if t.number in before} == before
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(drawn)) == len(drawn), drawn  # the resumed sampler did not draw the first trials again
    assert study.trials[interrupted].state == TrialState.FAIL
    assert all(t.state == TrialState.COMPLETE for t in study.trials if t.number != interrupted)
    children = child_runs(tmp_path, "cnn2d_logmel")
    assert children[interrupted].info.status == "FAILED"
    assert children[interrupted].data.tags["trial_state"] == "FAIL"
    assert sorted(children) == [0, 1, 2, 3, 4]


def test_a_diverging_trial_fails_and_the_sweep_goes_on(tmp_path: Path, cache_dir: Path) -> None:
    run_sweep(
        tmp_path,
        cache_dir,
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.study_name=divergence",
        "hydra.sweep.dir=multirun/divergence",
        "trainer.max_epochs=2",
        "optimizer=sgd",
        "model.optimizer.lr=choice(0.01,1e12)",
    )
    study = load_study(tmp_path, "divergence")
    states = {t.params["model.optimizer.lr"]: t.state for t in study.trials}
    assert states == {0.01: TrialState.COMPLETE, 1e12: TrialState.FAIL}
    children = child_runs(tmp_path, "divergence")
    failed = next(r for r in children.values() if r.data.params["model.optimizer.lr"] == "1000000000000.0")
    assert failed.info.status == "FAILED" and failed.data.tags["trial_state"] == "FAIL"
    assert failed.data.tags["error"].startswith("FloatingPointError: training loss became")  # the reason, one line


def test_a_two_objective_sweep_weighs_accuracy_against_the_measured_cost_and_logs_its_pareto_front(
    tmp_path: Path, cache_dir: Path
) -> None:
    result = run_sweep(
        tmp_path,
        cache_dir,
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.study_name=cost",
        "hydra.sweep.dir=multirun/cost",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+cost.clips=4",
        "hydra.sweeper.objectives={val/uar:maximize,cost/ms_per_clip:minimize}",
        "model.optimizer.lr=choice(0.001,0.002)",
    )
    study = load_study(tmp_path, "cost")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    output = result.stdout + result.stderr
    assert "pruning is off: Optuna prunes single-objective studies only" in output  # the default: median
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    children = child_runs(tmp_path, "cost")
    for trial in complete:  # every trial's cost: its run's metric, measured where its params say
        run = children[trial.number]
        assert run.data.metrics["cost/ms_per_clip"] == pytest.approx(trial.values[1]) and trial.values[1] > 0
        assert run.data.params["cost.clips"] == "4" and run.data.params["cost.cpu"]
        assert run.data.params["cost.avx512_bf16"] in ("True", "False")
    first, second = complete  # one inference path (the learning rate changes none of it) is timed once in a study
    assert first.values[1] == second.values[1]
    assert [children[t.number].data.params["cost.measured_by"] for t in complete] == [f"trial {first.number}"] * 2

    parent = parent_run(tmp_path, "cost")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    assert "plots/pareto_front.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    table = client.download_artifacts(parent.info.run_id, "pareto_front.md", str(tmp_path))
    header, _, *rows = Path(table).read_text().splitlines()
    assert header.startswith("| trial | val/uar | cost/ms_per_clip |")
    assert sorted(int(row.split("|")[1]) for row in rows) == sorted(t.number for t in study.best_trials)
    assert parent.data.metrics["study/pareto_trials"] == len(study.best_trials)
    assert "--max-ms-per-clip MS" in output


def test_a_grid_sweep_runs_every_point_once_though_each_ask_builds_its_sampler_anew() -> None:
    options = OmegaConf.create(
        {
            "direction": "maximize",
            "objectives": None,
            "sampler": {"_target_": "optuna.samplers.GridSampler", "seed": 123},
        }
    )
    sweep = StudySweep(options, OmegaConf.create({"monitor": "val/uar"}))
    space = {"a": CategoricalDistribution([1, 2]), "b": CategoricalDistribution(["x", "y"])}
    study = optuna.create_study(direction="maximize")
    for number in range(4):  # as the sweeper asks: a new sampler for each trial, told the trials before it
        study.sampler = sweep._sampler(space, trials_before=number)
        tell(study, study.ask(space), values=[0.5])  # as the sweeper tells: the grid's last stops the study
    assert sorted((t.params["a"], t.params["b"]) for t in study.trials) == [(1, "x"), (1, "y"), (2, "x"), (2, "y")]


def test_the_override_grammar_becomes_optuna_distributions() -> None:
    params = {
        "model.optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
        "model.net.dropout": "interval(0.1, 0.5)",
        "model.net.dense": "range(32, 129, step=32)",
        "model.net.kernel_size": "tag(int, interval(3, 7))",
        "data.batch_size": "choice(16, 32, 64)",
        "model.net.activation": "choice(relu, elu)",
    }
    space, fixed = parse_search_space(params, None, ["trainer.max_epochs=3", "model.net.dropout=interval(0.2,0.3)"])
    assert space == {
        "model.optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "model.net.dropout": FloatDistribution(0.2, 0.3),  # the command line wins over params
        "model.net.dense": IntDistribution(32, 128, step=32),
        "model.net.kernel_size": IntDistribution(3, 7),
        "data.batch_size": CategoricalDistribution([16, 32, 64]),
        "model.net.activation": CategoricalDistribution(["relu", "elu"]),
    }
    assert fixed == ["trainer.max_epochs=3"]


def test_the_explicit_search_space_form() -> None:
    explicit = {
        "model.optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.net.dense": {"type": "int", "low": 32, "high": 128, "step": 32},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    }
    space, _ = parse_search_space(None, explicit, [])
    assert space == {
        "model.optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "model.net.dense": IntDistribution(32, 128, step=32),
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
    }
    with pytest.raises(ConfigError, match="type must be int, float or categorical"):
        parse_search_space(None, {"x": {"type": "normal"}}, [])
