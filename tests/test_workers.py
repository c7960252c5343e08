"""Many workers on one study: PostgreSQL studies, one MLflow server, two worker processes, one killed mid-trial."""

from __future__ import annotations

import json
import operator
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from functools import reduce
from pathlib import Path

import mlflow
import optuna
import pytest
import sqlalchemy
import sqlalchemy.exc
import torch
from optuna.trial import TrialState

from emotion.serving.profiles import ProfileStore, clip_moments
from emotion.sweep.sweeper import worker_of
from tests.conftest import free_port
from tests.postgres import postgres_folder
from tests.test_sweep import QUICK

pytestmark = pytest.mark.integration

STUDY = "team"
BUDGET = 5


@pytest.fixture(scope="module")
def team() -> Iterator[dict]:
    """`emotion-team up` (passwords: the default) in a folder of its own, as a user starts it; `down` afterwards."""
    root = postgres_folder("emotion-team-")
    ports = ["--database-port", str(free_port()), "--mlflow-port", str(free_port())]
    team = [sys.executable, "-m", "emotion.cli.team"]
    try:
        up = subprocess.run([*team, "up", "--root", str(root), *ports], capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr[-3000:]
        env = subprocess.run([*team, "env", "--root", str(root), *ports], capture_output=True, text=True, check=True)
        exports = dict(line.removeprefix("export ").split("=", 1) for line in env.stdout.splitlines())
        yield {"root": root, "up": up.stdout + up.stderr, "exports": exports}
    finally:
        subprocess.run([*team, "down", "--root", str(root), *ports], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def services(team: dict) -> dict[str, str]:
    """The variables `emotion-team env` prints for a worker: where the services are, and the credentials."""
    return team["exports"]


def passwords_of(team: dict) -> list[str]:
    return list(json.loads((team["root"] / "secrets.json").read_text()).values())


def test_the_team_services_refuse_clients_without_the_passwords(team: dict, tmp_path: Path, cache_dir: Path) -> None:
    exports = team["exports"]
    assert set(exports) == {
        "MLFLOW_TRACKING_URI", "EMOTION_STUDY_STORAGE", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
        "PGPASSWORD",
    }  # fmt: skip
    assert stat.S_IMODE((team["root"] / "secrets.json").stat().st_mode) == 0o600
    assert not any(password in team["up"] for password in passwords_of(team))  # `up` prints no password

    for password in (None, "wrong"):  # PostgreSQL, without a password and with a wrong one
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("PGPASSWORD", raising=False)
            if password:
                patch.setenv("PGPASSWORD", password)
            with pytest.raises(sqlalchemy.exc.OperationalError, match="password"):
                sqlalchemy.create_engine(exports["EMOTION_STUDY_STORAGE"]).connect()
    with pytest.raises(urllib.error.HTTPError) as refused:  # the MLflow server, without credentials
        urllib.request.urlopen(f"{exports['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search?max_results=1")
    assert refused.value.code == 401

    sweep = ["--multirun", *QUICK, "sweep=cnn2d_logmel", f"hydra.sweep.dir={tmp_path}/multirun"]
    wrong_database = {**os.environ, **exports, "PGPASSWORD": "wrong", "EMOTION_CACHE_DIR": str(cache_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "emotion.cli.train", *sweep], cwd=tmp_path, env=wrong_database, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: the study storage {exports['EMOTION_STUDY_STORAGE']} refused the connection:")
    assert last_line.endswith('password authentication failed for user "emotion"')

    wrong = {**os.environ, **exports, "MLFLOW_TRACKING_PASSWORD": "wrong", "EMOTION_CACHE_DIR": str(cache_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "emotion.cli.train", *QUICK, "debug=fdr"], cwd=tmp_path, env=wrong, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the MLflow server at {exports['MLFLOW_TRACKING_URI']} refused the credentials "
        "(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD: `emotion-team env` prints them)"
    )


def test_two_servers_share_a_speakers_profile_in_the_teams_postgresql(services: dict[str, str], monkeypatch) -> None:
    """Two replicas of a served model add one speaker's clips to one profile; a clip both saw counts once."""
    if "PGPASSWORD" in services:
        monkeypatch.setenv("PGPASSWORD", services["PGPASSWORD"])
    url = services["EMOTION_STUDY_STORAGE"]  # the team's PostgreSQL (a database of its own would do as well)
    inputs = {"layers": torch.randn(3, 2, 4, dtype=torch.float64)}
    clips = clip_moments(inputs)
    one, two = ProfileStore(url), ProfileStore(url)

    one.add("model", [("ann", "clip0", clips[0]), ("ann", "clip1", clips[1])])
    two.add("model", [("ann", "clip1", clips[1]), ("ann", "clip2", clips[2])])
    shared = reduce(operator.add, (moments for _, moments in two.held("model", ["ann"])["ann"]))

    assert shared.clips == 3 and one.clips_of("model", "ann") == 3
    mean, var = shared.mean_var("layers")
    torch.testing.assert_close(mean, inputs["layers"].mean(0))
    torch.testing.assert_close(var, inputs["layers"].var(0, correction=0))


def start_worker(folder: Path, cache_dir: Path, services: dict[str, str]) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "emotion.cli.train", "--multirun", *QUICK, "sweep=cnn2d_logmel",
        f"hydra.sweeper.study_name={STUDY}", f"hydra.sweeper.n_trials={BUDGET}", "hydra.sweeper.heartbeat_interval=2",
        f"hydra.sweep.dir={folder}/multirun/{STUDY}", "trainer.max_epochs=2", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
    ]  # fmt: skip
    env = {**os.environ, **services, "EMOTION_CACHE_DIR": str(cache_dir)}
    log = (folder / f"worker-{time.monotonic_ns()}.log").open("w")
    return subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=log, start_new_session=True)


def worker_logs(folder: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(folder.glob("worker-*.log")))


def running_trial_with_a_run(study: optuna.Study, client: mlflow.MlflowClient, pid: int) -> int | None:
    """The number of a RUNNING trial of worker `pid` whose MLflow run has started, if any."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker_of(trial)[1] == str(pid):
            runs = client.search_runs(["1"], f"tags.study = '{STUDY}' and tags.trial_number = '{trial.number}'")
            if runs and runs[0].info.status == "RUNNING":
                return trial.number
    return None


def test_two_workers_share_one_study_and_a_killed_workers_trial_ends_failed(
    team: dict, services: dict[str, str], cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in services.items():  # this process reads the study and the runs as a worker would
        monkeypatch.setenv(name, value)
    client = mlflow.MlflowClient(services["MLFLOW_TRACKING_URI"])
    doomed, survivor = (start_worker(tmp_path, cache_dir, services) for _ in range(2))
    try:
        deadline = time.monotonic() + 300
        killed = None
        while killed is None:
            assert time.monotonic() < deadline, "the first worker never ran a trial"
            assert doomed.poll() is None, f"the first worker ended before it could be killed\n{worker_logs(tmp_path)}"
            try:
                study = optuna.load_study(study_name=STUDY, storage=services["EMOTION_STUDY_STORAGE"])
                killed = running_trial_with_a_run(study, client, doomed.pid)
            except KeyError:  # no study yet
                pass
            if killed is None:
                time.sleep(0.5)
        os.killpg(doomed.pid, signal.SIGKILL)  # mid-trial, with no chance to clean up
        doomed.wait(timeout=30)
        assert survivor.wait(timeout=600) == 0, worker_logs(tmp_path)
    finally:
        for worker in (doomed, survivor):
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)

    study = optuna.load_study(study_name=STUDY, storage=services["EMOTION_STUDY_STORAGE"])
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(BUDGET))  # exactly the budget, no number twice
    states = {t.number: t.state for t in study.trials}
    assert states[killed] == TrialState.FAIL
    assert all(state in (TrialState.COMPLETE, TrialState.PRUNED) for n, state in states.items() if n != killed)
    workers = {worker_of(t)[1] for t in study.trials}
    assert workers == {str(doomed.pid), str(survivor.pid)}  # both took trials from the one study

    runs = client.search_runs(["1"], f"tags.study = '{STUDY}'")
    (parent,) = [r for r in runs if r.data.tags.get("role") == "study"]
    children = [r for r in runs if r.data.tags.get("role") != "study"]
    assert Counter(r.data.tags["trial_number"] for r in children) == Counter(str(n) for n in range(BUDGET))
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    by_number = {int(r.data.tags["trial_number"]): r for r in children}
    assert by_number[killed].info.status == "FAILED" and by_number[killed].data.tags["trial_state"] == "FAIL"
    finished = [r for n, r in by_number.items() if n != killed]
    assert all(r.info.status == "FINISHED" for r in finished)
    assert client.list_artifacts(finished[0].info.run_id, "checkpoints")  # artifacts reached the server's store

    logged = worker_logs(tmp_path) + "".join(
        f"{run.data.params}{run.data.tags}{client.download_artifacts(run.info.run_id, 'config.yaml', str(tmp_path))}"
        if run in finished else f"{run.data.params}{run.data.tags}"
        for run in runs
    )  # fmt: skip
    assert not any(password in logged for password in passwords_of(team))


def test_trainer_ddp_trains_one_run_over_two_processes(tmp_path: Path, cache_dir: Path) -> None:
    """`trainer=ddp` as on a multi-GPU machine, here on 2 CPU processes (SyncBatchNorm needs GPUs: off)."""
    tracking = f"sqlite:///{tmp_path}/mlruns.db"
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
                 "trainer.sync_batchnorm=false", "trainer.max_epochs=1", *QUICK]  # fmt: skip
    env = {**os.environ, "EMOTION_CACHE_DIR": str(cache_dir), "MLFLOW_TRACKING_URI": tracking}
    result = subprocess.run(
        [sys.executable, "-m", "emotion.cli.train", *overrides], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    client = mlflow.MlflowClient(tracking)
    (run,) = client.search_runs(["1"])  # one run, logged by rank 0 only
    assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
    report = client.download_artifacts(run.info.run_id, "classification_report.json", str(tmp_path))
    support = json.loads(Path(report).read_text())["macro avg"]["support"]
    assert support >= int(run.data.params["split.test_clips"])  # both processes' test predictions
