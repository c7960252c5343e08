"""Sweeps whose trials are cross-validations, promotion of a study, and when the default pruner starts pruning."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from optuna.trial import TrialState

from emotion.cli import promote
from emotion.config import CONFIG_DIR
from tests.test_sweep import BY_VAL_LOSS, child_runs, environment, load_study, run_sweep


def cv_trial_runs(tmp_path: Path, study: str) -> dict[int, tuple[mlflow.entities.Run, list[mlflow.entities.Run]]]:
    """Each trial's run (a cross-validation's parent) and its fold runs, by trial number."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    found = {}
    for number, run in child_runs(tmp_path, study).items():
        folds = client.search_runs(["1"], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        found[number] = (run, sorted(folds, key=lambda f: int(f.data.tags["fold"])))
    return found


CV_SWEEP = [
    "sweep=cnn2d_logmel",
    "split=kfold",
    "split.n_folds=2",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "hydra.sweeper.n_trials=2",
]


def test_a_cross_validated_trial_returns_the_mean_validation_uar_of_its_folds(
    tmp_path: Path, cache_dir: Path, capsys
) -> None:
    run_sweep(tmp_path, cache_dir, *CV_SWEEP, "hydra/sweeper/pruner=none")
    study = load_study(tmp_path, "cnn2d_logmel")
    runs = cv_trial_runs(tmp_path, "cnn2d_logmel")
    assert sorted(runs) == [0, 1]
    for trial in study.trials:
        parent, folds = runs[trial.number]
        assert trial.state == TrialState.COMPLETE
        assert parent.data.tags["role"] == "cv" and [f.data.tags["fold"] for f in folds] == ["0", "1"]
        # one epoch per fold: each fold's logged val/uar is its best, and the objective is their mean
        fold_values = [f.data.metrics["val/uar"] for f in folds]
        assert trial.value == pytest.approx(sum(fold_values) / 2, abs=1e-6)
        assert parent.data.metrics["val/uar"] == pytest.approx(trial.value, abs=1e-6)
        assert sorted(trial.intermediate_values) == [0, 1]  # reported after each fold
        assert trial.intermediate_values[1] == pytest.approx(trial.value, abs=1e-6)
        assert "test/uar_mean" in parent.data.metrics  # logged, but never the objective
        assert parent.data.metrics["cost/ms_per_clip"] > 0  # a trial's cost, measured once on its first fold's model
        assert not any("cost/ms_per_clip" in fold.data.metrics for fold in folds)

    # Its trials hold no model: promotion says how to train the best one once, as a run of the study
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    with pytest.raises(SystemExit):
        promote.main(["--tracking-uri", uri, "--study", "cnn2d_logmel"])
    err = capsys.readouterr().err
    assert "trials are cross-validations, whose parent runs hold no model" in err
    command = next(line.strip() for line in err.splitlines() if line.strip().startswith("emotion-train "))
    assert "split=speaker" in command and "+logger.tags.study=cnn2d_logmel" in command and "split=kfold" not in command
    arguments = shlex.split(command)[1:]
    env = environment(tmp_path, cache_dir)
    retrain = subprocess.run([sys.executable, "-m", "emotion.cli.train", *arguments], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    promote.main(["--tracking-uri", uri, "--study", "cnn2d_logmel", "--name", "retrained"])
    version = mlflow.MlflowClient(uri).get_model_version_by_alias("retrained", "champion")
    retrained = mlflow.MlflowClient(uri).get_run(version.run_id)
    assert retrained.data.tags["study"] == "cnn2d_logmel" and retrained.data.tags["split"] == "speaker"
    assert retrained.data.tags["trial_number"] == str(study.best_trial.number)


def test_a_cross_validated_trial_is_pruned_between_folds(tmp_path: Path, cache_dir: Path) -> None:
    run_sweep(tmp_path, cache_dir, *CV_SWEEP, "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=1.1")
    study = load_study(tmp_path, "cnn2d_logmel")
    for trial in study.trials:
        parent, folds = cv_trial_runs(tmp_path, "cnn2d_logmel")[trial.number]
        assert trial.state == TrialState.PRUNED
        assert list(trial.intermediate_values) == [0]
        assert [f.data.tags["fold"] for f in folds] == ["0"]  # the second fold never ran
        assert parent.data.tags["trial_state"] == "PRUNED" and parent.info.status == "FINISHED"
        # the parent keeps the aggregates of the fold it ran
        assert parent.data.metrics["test/uar_mean"] == pytest.approx(folds[0].data.metrics["test/uar"])
        assert parent.data.metrics["val/uar"] == pytest.approx(trial.intermediate_values[0])


def test_a_cross_validated_trial_reported_at_every_fold_is_never_pruned_after_its_last(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A pruner that would stop every trial from the second report on finds nothing to prune: two folds ran."""
    pruner = [
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=1.1",
        "hydra.sweeper.pruner.n_warmup_steps=1",
    ]
    run_sweep(tmp_path, cache_dir, *CV_SWEEP, "hydra.sweeper.n_trials=1", *pruner)
    (trial,) = load_study(tmp_path, "cnn2d_logmel").trials
    parent, folds = cv_trial_runs(tmp_path, "cnn2d_logmel")[trial.number]
    assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [0, 1]
    assert [f.data.tags["fold"] for f in folds] == ["0", "1"]
    assert parent.data.tags["trial_state"] == "COMPLETE" and "test/uar_pooled" in parent.data.metrics


def test_promoting_a_study_registers_the_run_of_its_best_trial(tmp_path: Path, cache_dir: Path) -> None:
    result = run_sweep(
        tmp_path,
        cache_dir,
        "sweep=cnn2d_logmel",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=2",
        "hydra/sweeper/pruner=none",
        "hydra/sweeper/sampler=random",
        *BY_VAL_LOSS,
    )
    study = load_study(tmp_path, "cnn2d_logmel")
    runs = child_runs(tmp_path, "cnn2d_logmel")
    for trial in study.trials:  # each trial's value is its run's kept checkpoint's, logged under its own name
        assert runs[trial.number].data.metrics["val/loss_best"] == pytest.approx(trial.value, abs=1e-6)
    best = study.best_trial
    output = result.stdout + result.stderr
    assert "study cnn2d_logmel: 3 complete, 0 pruned, 0 fail" in output
    assert f"best trial {best.number}: val/loss={best.value:.4f} (model.optimizer.lr=" in output
    assert f"MLflow run {runs[best.number].info.run_id}" in output
    assert "ExperimentalWarning" not in output and "litlogger" not in output
    # the command the sweep printed, as printed
    (command,) = [line.split("promote it with: ", 1)[1] for line in output.splitlines() if "promote it with: " in line]
    assert command.startswith("emotion-promote ")
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    promote.main(["--tracking-uri", uri, *shlex.split(command)[1:], "--name", "swept"])
    champion = mlflow.MlflowClient(uri).get_model_version_by_alias("swept", "champion")
    assert champion.run_id == runs[study.best_trial.number].info.run_id


def test_the_default_pruner_prunes_nothing_until_five_trials_are_complete(tmp_path: Path) -> None:
    """A trial far below the others is safe while fewer than 5 trials are COMPLETE (the median of fewer is noise)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR / "hydra" / "sweeper" / "pruner"), version_base="1.3"):
        pruner = instantiate(compose(config_name="median"))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize", pruner=pruner)

    def a_trial_at(values: list[float]) -> optuna.Trial:
        trial = study.ask()
        for step, value in enumerate(values):
            trial.report(value, step)
        return trial

    for complete in range(5):
        laggard = a_trial_at([0.1, 0.1])
        assert not laggard.should_prune(), f"pruned with {complete} complete trials"
        study.tell(laggard, state=TrialState.FAIL)
        study.tell(a_trial_at([0.8, 0.9]), 0.9)
    assert a_trial_at([0.1, 0.1]).should_prune()  # five complete trials: now it is judged
