"""The training app end to end: real MLflow runs in a temporary SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from emotion.cli import predict
from emotion.data.corpora import EMOTIONS as CLASSES
from emotion.pipeline import train
from tests.conftest import FEW_BATCHES, TINY_CORPUS, finished_runs

EPOCH_METRICS = {"train/loss", "val/loss", "val/acc", "val/f1", "val/uar"}
TEST_METRICS = {"test/acc", "test/f1", "test/uar"}
ARTIFACTS = {"config.yaml", "confusion_matrix.png", "classification_report.json", "classification_report.txt"}


def run_app(*overrides: str, tmp_path: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    """`python -m emotion.cli.train` as a user starts it, in `tmp_path` (on the tiny corpus unless data= is given)."""
    env = {**os.environ, "EMOTION_CACHE_DIR": str(cache_dir), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns.db"}
    own_data = any(o.startswith("data=") for o in overrides)
    corpus = [] if own_data else [f"data.synthetic.{k}={v}" for k, v in TINY_CORPUS.items()]
    return subprocess.run(
        [sys.executable, "-m", "emotion.cli.train", *corpus, *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_tiny_run_of_the_app_writes_a_finished_mlflow_run(
    tmp_path: Path, cache_dir: Path, tiny_corpus: Path, capsys
) -> None:
    result = run_app(
        *FEW_BATCHES, "logger.log_model=true", "model.net.channels=[8,8,8]", tmp_path=tmp_path, cache_dir=cache_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]

    (run,) = finished_runs(f"sqlite:///{tmp_path}/mlruns.db")
    assert run.info.status == "FINISHED"
    # it ends by saying where the run is, what it kept and how it tested; Lightning's lines print once
    summary = result.stdout.strip().splitlines()[-3:]
    assert summary[0] == f"run {run.info.run_id}: http://127.0.0.1:5000/#/experiments/1/runs/{run.info.run_id}"
    assert summary[1].startswith("  best checkpoint (val/uar_best ") and "checkpoints/best-epoch00.ckpt" in summary[1]
    assert summary[2] == f"  test: acc {run.data.metrics['test/acc']:.4f}, UAR {run.data.metrics['test/uar']:.4f}, " + (
        f"macro-F1 {run.data.metrics['test/f1']:.4f}"
    )
    assert (result.stdout + result.stderr).count("Seed set to 42") == 1
    # before it, the test's table of each class; and none of the libraries' noise
    table = result.stdout.strip().splitlines()[-10:-3]
    assert table[0].split() == ["class", "recall", "precision", "f1", "clips"]
    assert [row.split()[0] for row in table[1:]] == list(CLASSES)
    assert sum(int(row.split()[-1]) for row in table[1:]) == int(run.data.params["split.test_clips"])
    for noise in ("Downloading artifacts", "LeafSpec", "not found. Creating it"):
        assert noise not in result.stdout + result.stderr, noise
    # the run logged its model as it trained: runs:/ID predicts before any promotion
    wav = str(sorted(tiny_corpus.glob("*.wav"))[0])
    store = f"sqlite:///{tmp_path}/mlruns.db"
    for uri in (f"runs:/{run.info.run_id}", f"runs:/{run.info.run_id}/model"):
        predict.main([wav, "--model", uri, "--tracking-uri", store, "--format", "json"])
        (record,) = json.loads(capsys.readouterr().out)
        assert record["emotion"] in ("angry", "disgust", "fear", "happy", "neutral", "sad")
    assert set(run.data.metrics) >= EPOCH_METRICS | TEST_METRICS
    assert run.data.params["model.net.channels"] == "[8, 8, 8]"
    assert run.data.params["trainable_params"] == "59174"
    assert run.data.tags["architecture"] == "cnn2d" and run.data.tags["features"] == "logmel"
    assert run.info.run_name == "cnn2d-logmel-synthetic"  # architecture, features, corpus

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts >= ARTIFACTS
    (checkpoint,) = client.list_artifacts(run.info.run_id, "checkpoints")
    assert checkpoint.path.endswith(".ckpt") and checkpoint.file_size > 0
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())

    report = json.loads(
        client.download_artifacts(run.info.run_id, "classification_report.json", str(tmp_path))
        and (tmp_path / "classification_report.json").read_text()
    )
    assert set(report) >= {"angry", "disgust", "fear", "happy", "neutral", "sad", "accuracy", "macro avg"}


def test_a_second_run_computes_no_features(make_config, tracking_uri: str, tmp_path: Path) -> None:
    small = ["model.net.channels=[4,4,4]", *FEW_BATCHES]
    train(make_config(*small, cache=tmp_path / "cache"))
    train(make_config(*small, cache=tmp_path / "cache"))
    first, second = finished_runs(tracking_uri)
    assert first.data.params["features_computed"] == "72"
    assert (second.data.params["features_computed"], second.data.params["features_cached"]) == ("0", "72")


def test_the_split_is_logged_per_partition(make_config, tracking_uri: str, tmp_path: Path) -> None:
    train(make_config("model.net.channels=[4,4,4]", *FEW_BATCHES))
    (run,) = finished_runs(tracking_uri)
    path = mlflow.MlflowClient(tracking_uri).download_artifacts(run.info.run_id, "split.json", str(tmp_path))
    split = json.loads(Path(path).read_text())
    assert [len(split[p]["speakers"]) for p in ("train", "val", "test")] == [4, 1, 1]
    assert run.data.params["split.test_clips"] == str(split["test"]["clips"]) == "12"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=crema_d", "data.root=/no/such/folder"], "error: data.root=/no/such/folder: no such folder"),
        (["data=emodb"], "error: data=emodb needs data.root=PATH: the folder that holds the corpus"),
        (["data=crema_d", "data.root=/dev/null"], "error: data.root=/dev/null: not a folder"),
        (["trainer.max_epochs=two"], "error: trainer.max_epochs='two': an integer is needed"),
        (["+trainer.max_epoch=2"], "error: trainer.max_epoch: not an option of Lightning's Trainer; did you mean"),
        (["trainer=gpu"], "error: trainer=gpu, but this machine has no GPU that torch can use: use trainer=cpu"),
        (["monitor=val/uarr"], "error: monitor=val/uarr: no run logs it; choose one of"),
        (["model=cnn3d"], "error: In 'config': Could not find 'model/cnn3d' Available options in 'model': cnn1d"),
        (["trainer.max_epochz=3"], "error: Could not override 'trainer.max_epochz'. To append to your config use"),
        (["model=cnn1d"], "error: model CNN1D cannot take features=logmel: model cnn1d takes one input shaped"),
        (["split=by_age"], "error: In 'config': Could not find 'split/by_age' Available options in 'split': clip"),
        (["features=mfcc", "features.n_mfcc=abc"], "error: features.n_mfcc='abc': an integer is needed"),
        (["model.optimizer.lr=fast"], "error: model.optimizer.lr='fast': a number is needed"),
        (["data.batch_size=1.5"], "error: data.batch_size=1.5: an integer is needed"),
    ],
)
def test_bad_input_gives_a_one_line_error_and_leaves_no_run_folder_and_no_run(
    overrides, message, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """In this process (the app's start-up, as `main()` runs it); `python -m` is shown by the test below."""
    code, stderr = run_app_here(
        *overrides, tmp_path=tmp_path, cache_dir=cache_dir, monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 1
    assert_refused_in_one_line(stderr, message, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=cnn3d"], "error: In 'config': Could not find 'model/cnn3d' Available options in 'model': cnn1d"),
        (["trainer=gpu"], "error: trainer=gpu, but this machine has no GPU that torch can use: use trainer=cpu"),
    ],
)
def test_a_user_started_app_refuses_bad_input_in_one_line(overrides, message, tmp_path: Path, cache_dir: Path) -> None:
    result = run_app(*overrides, tmp_path=tmp_path, cache_dir=cache_dir)
    assert result.returncode == 1
    assert_refused_in_one_line(result.stderr, message, tmp_path)


def run_app_here(
    *overrides: str, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> tuple[int, str]:
    """`emotion-train` run by its entry point in this process, in `tmp_path`: exit code and standard error."""
    from hydra.core.global_hydra import GlobalHydra

    from emotion.cli import train as app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns.db")
    own_data = any(o.startswith("data=") for o in overrides)
    corpus = [] if own_data else [f"data.synthetic.{k}={v}" for k, v in TINY_CORPUS.items()]
    monkeypatch.setattr(sys, "argv", ["emotion-train", *corpus, *overrides])
    try:
        app.main()
        code = 0
    except SystemExit as exited:
        code = int(exited.code or 0)
    finally:
        GlobalHydra.instance().clear()
    return code, capsys.readouterr().err


def assert_refused_in_one_line(stderr: str, message: str, tmp_path: Path) -> None:
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(message), stderr[-2000:]
    assert "Traceback" not in stderr
    assert "Error in call to target" not in stderr and "HYDRA_FULL_ERROR" not in stderr
    assert not (tmp_path / "outputs").exists()  # Hydra's outputs/DATE/TIME/ of a run refused at start-up
    assert not (tmp_path / "mlruns.db").exists()  # refused before any run was opened: no FAILED run
    assert "Computing" not in stderr and "read 1728 clips" not in stderr  # nor any clip read


def test_an_undecodable_wav_is_named_under_the_error_policy(tmp_path: Path, cache_dir: Path, tiny_corpus) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for wav in sorted(tiny_corpus.glob("*.wav")):
        (corpus / wav.name).write_bytes(wav.read_bytes())
    (corpus / "1003_TIE_SAD_MD.wav").write_bytes(b"RIFF....WAVEfmt broken")
    result = run_app(
        "data=crema_d", f"data.root={corpus}", "data.on_bad_file=error", tmp_path=tmp_path, cache_dir=cache_dir
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: cannot decode audio file {corpus / '1003_TIE_SAD_MD.wav'}")
    )


def test_a_run_logs_the_value_and_epoch_of_the_checkpoint_it_keeps(make_config, tracking_uri: str) -> None:
    cfg = make_config(
        *[o for o in FEW_BATCHES if not o.startswith("trainer.max_epochs")],
        "trainer.max_epochs=4",
        "model.net.channels=[8,8,8]",
        "monitor=val/loss",  # continuous, so epochs differ
        "mode=min",
    )
    results = train(cfg)
    (run,) = finished_runs(tracking_uri)
    history = mlflow.MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "val/loss")
    assert len(history) == 4
    best = min(history, key=lambda m: m.value)
    assert run.data.metrics["val/loss_best"] == pytest.approx(best.value, abs=1e-6)
    assert results["val/loss_best"] == results["val/loss"] == pytest.approx(best.value, abs=1e-6)
    epochs = [m.value for m in mlflow.MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "epoch")]
    best_epoch = int(run.data.metrics["best_epoch"])
    assert history[best_epoch].value == pytest.approx(best.value, abs=1e-6) and best_epoch in epochs


def test_callbacks_named_on_the_command_line_join_the_trainer(make_config, tracking_uri: str) -> None:
    cfg = make_config(
        *FEW_BATCHES,
        "model.net.channels=[4,4,4]",
        "callbacks=[default,lr_monitor]",
        "+callbacks.timer={_target_:lightning.pytorch.callbacks.Timer,duration:'00:00:10:00'}",
    )
    train(cfg)
    (run,) = finished_runs(tracking_uri)
    assert run.data.metrics["lr-Adam"] == pytest.approx(cfg.model.optimizer.lr)  # LearningRateMonitor logged it


@pytest.mark.parametrize(
    ("debug", "setting", "trainer_says"),
    [
        ("fdr", ("trainer.fast_dev_run", "True"), "Running in `fast_dev_run` mode"),
        ("profiler", ("trainer.profiler", "simple"), "Profiler Report"),
        ("overfit", ("trainer.overfit_batches", "3"), "Epoch 1"),
    ],
)
def test_a_debug_mode_runs_the_app_with_lightnings_switch(
    debug: str, setting: tuple[str, str], trainer_says: str, tmp_path: Path, cache_dir: Path
) -> None:
    extra = ["trainer.max_epochs=2"] if debug == "overfit" else []
    result = run_app(f"debug={debug}", "model.net.channels=[4,4,4]", *extra, tmp_path=tmp_path, cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert trainer_says in result.stdout + result.stderr
    (run,) = finished_runs(f"sqlite:///{tmp_path}/mlruns.db")
    key, value = setting
    assert run.data.params[key] == value
