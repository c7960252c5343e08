"""Promotion to the Model Registry and prediction with the champion, on real runs in a real SQLite store.

The runs are trained for a few batches, so their scores are near chance and may tie; each test that
needs a known ranking logs the runs' `val/uar_best` itself, which is the one thing it does not train for.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from emotion.cli import predict, promote
from emotion.models.module import EmotionClassifier
from emotion.pipeline import train
from emotion.serving.predictor import inference_state
from emotion.serving.pyfunc import AUDIO_DIRS, MAX_ROWS
from emotion.tracking.registry import Ranking, leaderboard
from tests.conftest import FEW_BATCHES, compose_config, free_port, running_server

TINY_MODEL = ["model.net.channels=[8,8,8]", "model.net.dense=16"]


class Store:
    """A tracking store with real trained runs, and the configs they were trained with."""

    def __init__(self, folder: Path, cache_dir: Path, model: tuple[str, ...] = tuple(TINY_MODEL)) -> None:
        self.folder, self.cache_dir, self.model = folder, cache_dir, model
        self.uri = f"sqlite:///{folder / 'mlruns.db'}"
        self.client = mlflow.MlflowClient(self.uri)
        self.configs: dict[str, DictConfig] = {}

    def config(self, *overrides: str) -> DictConfig:
        return compose_config(
            *FEW_BATCHES,
            *self.model,
            *overrides,
            cache_dir=self.cache_dir,
            output_dir=self.folder / "outputs" / str(len(self.configs)),
            tracking_uri=self.uri,
            artifact_location=self.folder / "mlartifacts",
        )

    def train(self, name: str, *overrides: str) -> str:
        """Train a run named `name`; returns its run ID."""
        cfg = self.config(f"logger.run_name={name}", *overrides)
        train(cfg)
        (run,) = self.client.search_runs(
            [self.client.get_experiment_by_name("emotion").experiment_id], f"attributes.run_name = '{name}'"
        )
        self.configs[run.info.run_id] = cfg
        return run.info.run_id

    def score(self, run_id: str, value: float) -> None:
        """Give a run a known `val/uar_best` (its kept checkpoint's value: what runs are ranked by)."""
        self.client.log_metric(run_id, "val/uar_best", value, step=10_000)

    def promote(self, *args: str) -> None:
        promote.main(["--tracking-uri", self.uri, *args])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Store:
    """Three trained runs (a, b, c) and runs that must never win: failed, pruned, a study's parent."""
    store = Store(tmp_path_factory.mktemp("registry"), cache_dir)
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        store.train(name, f"seed={seed}")
    experiment_id = store.client.get_experiment_by_name("emotion").experiment_id
    for name, status, tags in (
        ("crashed", "FAILED", {}),
        ("pruned", "FINISHED", {"trial_state": "PRUNED", "study": "s"}),
        ("study s", "FINISHED", {"role": "study", "study": "s"}),
        ("a loso fold02", "FINISHED", {"fold": "2", "cv": "loso"}),  # trained on a subset of the speakers
    ):
        run = store.client.create_run(experiment_id, run_name=name, tags=tags)
        store.client.log_metric(run.info.run_id, "val/uar_best", 0.99)
        store.client.set_terminated(run.info.run_id, status)
    return store


def run_id_of(store: Store, name: str) -> str:
    return next(i for i, c in store.configs.items() if c.logger.run_name == name)


def test_promote_registers_the_best_finished_run_and_moves_the_aliases(store: Store, capsys) -> None:
    a, b, c = (run_id_of(store, n) for n in "abc")
    for run_id, value in ((a, 0.50), (b, 0.70), (c, 0.40)):
        store.score(run_id, value)

    store.promote("--name", "ser")
    first = store.client.get_model_version_by_alias("ser", "champion")
    assert first.run_id == b
    assert first.tags["source_run_id"] == b
    assert first.tags["metric"] == "val/uar_best" and first.tags["metric_value"] == "0.7"
    assert first.tags["split"] == "speaker" and first.tags["leaky"] == "false"
    assert json.loads(first.tags["features"])["_target_"] == "emotion.data.features.LogMel"
    assert json.loads(first.tags["data"])["split"]["strategy"] == "speaker"
    assert "registered run b" in capsys.readouterr().out

    store.promote("--name", "ser")  # the same winner: nothing moves, no new version
    assert len(store.client.search_model_versions("name = 'ser'")) == 1
    assert "already ser@champion" in capsys.readouterr().out

    store.score(c, 0.80)
    store.promote("--name", "ser")
    champion = store.client.get_model_version_by_alias("ser", "champion")
    previous = store.client.get_model_version_by_alias("ser", "previous")
    assert (champion.run_id, str(champion.version)) == (c, "2")
    assert (previous.run_id, str(previous.version)) == (b, "1")


def test_runs_are_ranked_by_their_kept_checkpoints_value_not_their_last_epochs(store: Store) -> None:
    a, b = run_id_of(store, "a"), run_id_of(store, "b")
    store.score(a, 0.90)  # its best epoch, kept as its checkpoint ...
    store.client.log_metric(a, "val/uar", 0.20, step=20_000)  # ... then a last epoch that fell back
    store.score(b, 0.85)
    store.client.log_metric(b, "val/uar", 0.85, step=20_000)
    ranked = leaderboard(store.client, Ranking("emotion"))
    assert [r.info.run_id for r in ranked[:2]] == [a, b]


def test_dry_run_prints_the_leaderboard_and_changes_nothing(store: Store, capsys) -> None:
    for name, value in (("a", 0.55), ("b", 0.45), ("c", 0.35)):
        store.score(run_id_of(store, name), value)
    store.promote("--name", "dry", "--dry-run")
    out = capsys.readouterr().out
    header, _, *rows = out.splitlines()[:5]
    assert header.split()[:5] == ["#", "run", "id", "val/uar_best", "test/acc"]
    assert header.split()[-4:] == ["leaky", "study", "trial", "run"]
    names = [row.split()[-1] for row in rows]
    assert names == ["a", "b", "c"]  # the failed, pruned, fold and parent runs (0.99) are not competing
    assert [row.split()[1] for row in rows] == [run_id_of(store, n) for n in "abc"]
    assert all(row.split()[4] == "6" for row in rows)  # six classes each
    assert "dry run: would register run a" in out
    assert store.client.search_registered_models("name = 'dry'") == []


def test_a_leaky_run_is_refused_unless_forced(store: Store, capsys) -> None:
    leaky = store.train("leaky", "augment=noise", "augment.before_split=true", "data.split.strategy=clip")
    assert store.client.get_run(leaky).data.tags["leaky"] == "true"
    store.score(leaky, 0.999)

    with pytest.raises(SystemExit) as exited:
        store.promote("--name", "careful")
    assert exited.value.code == 1
    assert "leaky=true" in capsys.readouterr().err
    assert store.client.search_registered_models("name = 'careful'") == []

    store.promote("--name", "careful", "--filter", "tags.leaky = 'false'")
    assert store.client.get_model_version_by_alias("careful", "champion").run_id != leaky

    store.promote("--name", "careful", "--allow-leaky")
    assert store.client.get_model_version_by_alias("careful", "champion").run_id == leaky
    store.client.log_metric(leaky, "val/uar_best", 0.0, step=20_000)  # out of the other tests' way


def test_a_run_of_other_classes_than_the_champions_is_refused_unless_allowed(store: Store, capsys) -> None:
    for name, value in (("a", 0.55), ("b", 0.45), ("c", 0.35)):
        store.score(run_id_of(store, name), value)
    store.promote("--name", "columns")
    four = store.train("four", "data.classes=[angry,happy,neutral,sad]")
    store.score(four, 0.98)  # a 4-class UAR (chance 0.25) outranks the 6-class runs (chance 0.167)

    with pytest.raises(SystemExit):
        store.promote("--name", "columns")
    err = capsys.readouterr().err
    assert "predicts ['angry', 'happy', 'neutral', 'sad'], the champion ['angry', 'disgust'," in err
    assert "--allow-new-classes" in err
    assert store.client.get_model_version_by_alias("columns", "champion").run_id == run_id_of(store, "a")

    store.promote("--name", "columns", "--allow-new-classes")
    assert store.client.get_model_version_by_alias("columns", "champion").run_id == four
    store.client.log_metric(four, "val/uar_best", 0.0, step=20_000)  # out of the other tests' way


def test_a_study_that_does_not_exist_is_named_with_those_that_do(store: Store, capsys) -> None:
    with pytest.raises(SystemExit):
        store.promote("--study", "cnn2d-logmel")
    assert "error: no study 'cnn2d-logmel' in experiment 'emotion' (its studies: ['s'])" in capsys.readouterr().err


def test_commands_that_need_a_store_never_create_one(tmp_path: Path, tiny_corpus: Path, capsys) -> None:
    missing = tmp_path / "nowhere" / "mlruns.db"
    clip = str(next(tiny_corpus.glob("*.wav")))
    for command in (promote.main, predict.main):
        args = ["--tracking-uri", f"sqlite:///{missing}"] + ([clip] if command is predict.main else [])
        with pytest.raises(SystemExit) as exited:
            command(args)
        assert exited.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: no MLflow store at {missing}") and "--tracking-uri or MLFLOW_TRACKING_URI" in err
    assert not missing.exists() and not missing.parent.exists()


def test_a_failed_promotion_leaves_the_aliases_where_they_were(store: Store, capsys) -> None:
    store.score(run_id_of(store, "a"), 0.60)
    store.promote("--name", "safe")
    before = store.client.get_model_version_by_alias("safe", "champion")

    experiment_id = store.client.get_experiment_by_name("emotion").experiment_id
    empty = store.client.create_run(experiment_id, run_name="no-checkpoint")
    store.client.log_metric(empty.info.run_id, "val/uar_best", 0.98)
    store.client.set_terminated(empty.info.run_id, "FINISHED")
    with pytest.raises(SystemExit):
        store.promote("--name", "safe")
    assert "lacks its checkpoint" in capsys.readouterr().err
    assert store.client.get_model_version_by_alias("safe", "champion").run_id == before.run_id
    assert len(store.client.search_model_versions("name = 'safe'")) == 1
    store.client.delete_run(empty.info.run_id)


@pytest.fixture(scope="module")
def champion(store: Store) -> tuple[str, str]:
    """(model URI, run ID) of a registered champion of its own."""
    store.score(run_id_of(store, "b"), 0.90)
    promote.main(["--tracking-uri", store.uri, "--name", "served"])
    return "models:/served@champion", run_id_of(store, "b")


def lightning_probabilities(store: Store, run_id: str) -> tuple[list[str], torch.Tensor]:
    """Test-partition clips of a run and the probabilities its LightningModule gives them (Trainer.predict)."""
    cfg = store.configs[run_id]
    features = instantiate(cfg.features)
    datamodule = instantiate(cfg.data, features=features, cache_dir=cfg.paths.cache_dir, augment=None)
    datamodule.setup()
    checkpoint = next(Path(cfg.paths.output_dir, "checkpoints").rglob("*.ckpt"))
    module = EmotionClassifier.load_from_checkpoint(checkpoint, net=instantiate(cfg.model.net), weights_only=True)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    probabilities = torch.cat(trainer.predict(module, datamodule=datamodule))
    return [str(datamodule.clips[i].path) for i in datamodule.split.test], probabilities


def test_the_pyfunc_predicts_what_the_lightning_module_predicts_on_the_same_wav_files(
    store: Store, champion, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, run_id = champion
    paths, expected = lightning_probabilities(store, run_id)
    monkeypatch.setenv(AUDIO_DIRS, str(tiny_corpus))
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model(uri)

    from_files = model.predict(pd.DataFrame({"path": paths}))
    probabilities = from_files.filter(like="prob_").to_numpy()
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=1e-5)
    classes = store.configs[run_id].data.classes
    assert from_files["emotion"].tolist() == [classes[i] for i in expected.argmax(dim=1).tolist()]

    waves = [sf.read(p, dtype="float32") for p in paths[:3]]
    from_arrays = model.predict(
        pd.DataFrame({"waveform": [w.tolist() for w, _ in waves], "sample_rate": [r for _, r in waves]})
    )
    np.testing.assert_allclose(from_arrays.filter(like="prob_").to_numpy(), probabilities[:3], atol=1e-5)


def test_the_registered_models_files_live_in_the_runs_experiment_artifact_store(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "store", cache_dir)
    store.train("located")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store.promote("--name", "located")
    version = store.client.get_model_version_by_alias("located", "champion")
    experiment = store.client.get_experiment_by_name("emotion")
    model = store.client.get_logged_model(version.source.removeprefix("models:/"))
    assert model.experiment_id == experiment.experiment_id
    assert model.artifact_location.startswith(experiment.artifact_location)
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "store" / "mlruns").exists()


@pytest.mark.parametrize(
    ("model", "overrides"),
    [
        (TINY_MODEL, ["features/window=utterance", "features.window.trim_db=40"]),
        ([], ["experiment=egemaps_linear", "model.net.hidden=16"]),
    ],
    ids=["whole-utterance-cnn2d", "egemaps-linear"],
)
def test_a_promoted_model_predicts_by_the_policy_and_features_it_was_trained_with(
    tmp_path: Path, cache_dir: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch, model: list, overrides: list
) -> None:
    monkeypatch.setenv(AUDIO_DIRS, str(tiny_corpus))
    store = Store(tmp_path, cache_dir, tuple(model))
    run_id = store.train("policy", *overrides)
    store.promote("--name", "policy")
    paths, expected = lightning_probabilities(store, run_id)
    mlflow.set_tracking_uri(store.uri)
    predicted = mlflow.pyfunc.load_model("models:/policy@champion").predict(pd.DataFrame({"path": paths}))
    np.testing.assert_allclose(predicted.filter(like="prob_").to_numpy(), expected.numpy(), atol=1e-5)
    requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/policy@champion")).read_text()
    assert ("opensmile==" in requirements) == ("experiment=egemaps_linear" in overrides)


def test_the_registered_model_carries_its_signature_example_and_weights_only(store: Store, champion) -> None:
    uri, _ = champion
    mlflow.set_tracking_uri(store.uri)
    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs is None  # the model checks its rows itself, refusing bad ones in one line
    assert info.signature.outputs.input_names()[:4] == ["emotion", "confidence", "silent", "prob_angry"]
    assert info.saved_input_example_info is not None
    model_dir = Path(mlflow.artifacts.download_artifacts(uri))
    assert (model_dir / "code" / "emotion" / "serving" / "predictor.py").is_file()
    weights = torch.load(next(model_dir.rglob("weights.pt")), weights_only=True)
    assert all(k.startswith(("model.", "standardizer.")) for k in weights)


def test_a_checkpoint_that_holds_code_is_not_loaded(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this ran while loading",))

    torch.save({"state_dict": {}, "extra": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        inference_state(tmp_path / "evil.ckpt")


def run_predict(store: Store, *args: str) -> subprocess.CompletedProcess:
    """`emotion-predict` in a process of its own, as a user starts it."""
    return subprocess.run(
        [sys.executable, "-m", "emotion.cli.predict", "--tracking-uri", store.uri, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def predict_here(store: Store, capsys, *args: str) -> tuple[int, str, str]:
    """`emotion-predict` in this process (quicker): exit code, stdout and stderr."""
    try:
        predict.main(["--tracking-uri", store.uri, *args])
        code = 0
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_emotion_predict_on_a_folder_prints_a_table_and_writes_csv_and_json(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    uri, _ = champion
    wavs = sorted(tiny_corpus.glob("*.wav"))
    table = run_predict(store, "--model", uri, str(tiny_corpus))
    assert table.returncode == 0, table.stderr[-3000:]
    header, *rows = table.stdout.strip().splitlines()
    assert header.split()[:3] == ["file", "emotion", "confidence"]
    assert len(rows) == len(wavs)
    assert "100%" in table.stderr  # the progress bar over the folder

    code, _, err = predict_here(
        store, capsys, "--model", uri, str(tiny_corpus), "--format", "csv", "-o", str(tmp_path / "p.csv")
    )
    assert code == 0, err[-3000:]
    frame = pd.read_csv(tmp_path / "p.csv")
    assert frame["file"].tolist() == [str(p) for p in wavs]
    np.testing.assert_allclose(frame.filter(like="prob_").sum(axis=1), 1.0, atol=1e-3)
    assert set(frame["emotion"]) <= set(store.configs[champion[1]].data.classes)

    _, out, _ = predict_here(store, capsys, "--model", uri, str(wavs[0]), "--format", "json")
    (record,) = json.loads(out)
    assert record["file"] == str(wavs[0]) and record["emotion"] == frame["emotion"][0]


@pytest.mark.parametrize(
    ("model", "audio", "message"),
    [
        ("models:/nobody@champion", "good", "no registered model 'nobody'"),
        ("models:/served@gold", "good", "has no alias 'gold'"),
        ("models:/served@champion", "bad", "cannot decode audio file"),
        ("models:/served@champion", "missing", "no such file or folder"),
    ],
)
def test_emotion_predict_explains_what_is_missing(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path, capsys, model: str, audio: str, message: str
) -> None:
    (tmp_path / "bad.wav").write_text("not audio")
    path = {"good": next(tiny_corpus.glob("*.wav")), "bad": tmp_path / "bad.wav", "missing": tmp_path / "x.wav"}[audio]
    code, _, err = predict_here(store, capsys, "--model", model, str(path))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err


def test_emotion_predict_skips_bad_files_names_each_and_exits_non_zero(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(tiny_corpus.glob("*.wav"))[:4]
    for wav in good:
        (folder / wav.name).write_bytes(wav.read_bytes())
    (folder / "corrupt.wav").write_bytes(b"RIFF....not audio")
    samples, rate = sf.read(good[0], dtype="float32")
    sf.write(folder / "blip.wav", samples[: int(0.09 * rate)], rate)

    code, out, err = predict_here(store, capsys, "--model", champion[0], str(folder), "--format", "csv")
    assert code == 1
    assert sorted(Path(f).name for f in pd.read_csv(io.StringIO(out))["file"]) == sorted(w.name for w in good)
    assert "warning: skipped" in err and "corrupt.wav" in err
    assert "blip.wav is 0.090 s long, shorter than the data.min_duration=0.25 s" in err
    assert "error: skipped 2 of 6 files" in err

    written = tmp_path / "kept.csv"
    stop = ["--on-bad-file", "error", "--format", "csv", "-o", str(written)]
    code, out, err = predict_here(store, capsys, "--model", champion[0], str(folder), *stop)
    assert (code, out) == (1, "")
    assert err.strip().splitlines()[-1].startswith("error: ") and "blip.wav" in err
    kept = pd.read_csv(written)["file"].map(lambda f: Path(f).name).tolist()
    assert kept == sorted(w.name for w in good)  # predicted before the bad file stopped it, and not lost


def test_emotion_predict_checks_its_output_folder_before_predicting_anything(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    target = tmp_path / "missing" / "dir" / "out.json"
    code, out, err = predict_here(store, capsys, "--model", champion[0], str(tiny_corpus), "-o", str(target))
    assert (code, out) == (1, "")
    assert err.strip() == f"error: cannot write --output {target}: no folder {target.parent}"
    assert "predicting" not in err  # refused before the model was loaded or any file read


def test_the_served_model_refuses_a_waveform_shorter_than_training_allowed(store: Store, champion) -> None:
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model(champion[0])
    with pytest.raises(
        MlflowException, match=r"the waveform is 0.000 s long, shorter than the data.min_duration=0.25 s"
    ):
        model.predict(pd.DataFrame({"waveform": [[0.0, 0.01, 0.02]], "sample_rate": [16000]}))


def post(url: str, payload: dict) -> tuple[int, dict]:
    """POST `payload` as JSON: the HTTP status and the JSON answer, refusals (4xx) included."""
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def base64_of(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_the_served_model_takes_audio_bytes_reads_only_allowed_folders_and_refuses_bad_requests_in_one_line(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path
) -> None:
    uri, _ = champion
    wav, outside = sorted(tiny_corpus.glob("*.wav"))[:2]  # `outside`: a real file, in no allowed folder
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(wav, allowed / "inside.wav")
    (allowed / "link.wav").symlink_to(outside)  # a way out of the folder, refused like the rest
    port = free_port()
    serve = ["mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, AUDIO_DIRS: str(allowed), MAX_ROWS: "4"}
    samples, rate = sf.read(wav, dtype="float32")
    one_second = [0.01 * float(np.sin(i / 5)) for i in range(16000)]
    good = {"audio": base64_of(wav)}
    bad = {
        "outside": [{"path": str(outside)}],
        "missing": [{"path": str(allowed / "missing.wav")}],
        "link": [{"path": str(allowed / "link.wav")}],
        "too long": [{"waveform": [0.0] * 360_000, "sample_rate": 100}],
        "too short": [{"waveform": one_second[:800], "sample_rate": 16000}],
        "corrupt base64": [{"audio": "UklGRi4uLi4gbm90IGF1ZGlv!!"}],
        "not audio": [{"audio": base64.b64encode(b"plain text, not a sound file " * 40).decode()}],
        "too many rows": [good] * 5,
        "wrong column": [{"wav": good["audio"]}],
        "empty records": [],
        "NaN": [{"waveform": [*one_second[:-1], float("nan")], "sample_rate": 16000}],
        "Inf": [{"waveform": [*one_second[:-1], float("inf")], "sample_rate": 16000}],
        "wrong type": [{"waveform": "0.1, 0.2", "sample_rate": 16000}],
        "rate of the wrong type": [{"waveform": one_second, "sample_rate": "fast"}],
    }
    with running_server([sys.executable, "-m", *serve], port, "/ping", tmp_path / "serve.log", env=env) as url:
        answers = {
            name: post(f"{url}/invocations", {"dataframe_records": records})
            for name, records in {
                "bytes": [good],
                "waveform": [{"waveform": samples.tolist(), "sample_rate": rate}],
                "inside": [{"path": str(allowed / "inside.wav")}],
                "silence": [{"waveform": [0.0] * 32000, "sample_rate": 16000}],
            }.items()
        }
        for name, records in bad.items():
            answers[name] = post(f"{url}/invocations", {"dataframe_records": records})
            answers[f"good after {name}"] = post(f"{url}/invocations", {"dataframe_records": [good]})
    served = {name: answer["predictions"][0] for name, (status, answer) in answers.items() if status == 200}
    refused = {name: answer for name, (status, answer) in answers.items() if status == 400}
    assert set(refused) == set(bad)
    assert set(served) == {"bytes", "waveform", "inside", "silence"} | {f"good after {name}" for name in bad}
    for name in ("waveform", "inside", *(f"good after {name}" for name in bad)):
        assert served[name]["emotion"] == served["bytes"]["emotion"]
        assert served[name]["confidence"] == pytest.approx(served["bytes"]["confidence"], abs=1e-5)
    assert served["bytes"]["silent"] is False
    assert (served["silence"]["emotion"], served["silence"]["confidence"], served["silence"]["silent"]) == (
        "silence",
        0.0,
        True,
    )
    messages = {name: answer["message"] for name, answer in refused.items()}
    for name, answer in refused.items():
        assert set(answer) <= {"error_code", "message", "sqlstate", "error_class"}, name  # no stack trace
        message = answer["message"]
        assert "\n" not in message and " at 0x" not in message and "Failed to predict" not in message, name
        assert "site-packages" not in message and "mlartifacts" not in message and "Traceback" not in message, name
    unnamed = {name: messages[name].replace(path, "PATH") for name, path in (
        ("outside", str(outside)), ("missing", str(allowed / "missing.wav")), ("link", str(allowed / "link.wav"))
    )}  # fmt: skip
    assert (
        unnamed["outside"]
        == unnamed["missing"]
        == unnamed["link"]
        == ("no audio file 'PATH' in the folders this model may read")
    )
    assert messages["too long"] == "the waveform is 3600.0 s long, longer than data.max_duration=300 s"
    assert messages["too short"].startswith("the waveform is 0.050 s long, shorter than the data.min_duration=0.25 s")
    assert messages["corrupt base64"] == "`audio` is not valid base64 (send the file's bytes, base64-encoded)"
    assert messages["not audio"].startswith("cannot decode audio file the clip in `audio`:")
    assert messages["too many rows"] == "5 rows in one request, more than the 4 this model takes (EMOTION_MAX_ROWS)"
    assert (
        messages["wrong column"]
        == "unknown column(s) ['wav']: each row takes ['audio', 'path', 'waveform', 'sample_rate']"
    )
    assert messages["empty records"] == "the request holds no rows: send one row per clip"
    assert (
        messages["NaN"] == messages["Inf"] == "the waveform holds samples that are not finite numbers (NaN or infinity)"
    )
    assert messages["wrong type"] == "a waveform must be an array of numbers (mono samples)"
    assert messages["rate of the wrong type"] == "`sample_rate` must be a number of samples a second"
