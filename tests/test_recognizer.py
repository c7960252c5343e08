"""The trained model is one object (`EmotionRecognizer`), restored from its checkpoint alone, and every way of
using a model classifies through it: `emotion-predict`, the served model and `emotion-evaluate` give the same
probabilities for the same clips."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mlflow.models import Model
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from emotion.cli import evaluate, predict
from emotion.config import CONFIG_DIR
from emotion.data.corpora import read_corpus
from emotion.data.frontend import AudioFrontEnd
from emotion.errors import ConfigError
from emotion.models.estimator import EstimatorHead, UntrustedFile
from emotion.pipeline.build import inference_recipe
from emotion.serving import pyfunc
from emotion.serving.encoder_refs import ENCODER_DIRS
from emotion.serving.model_file import StaleCheckpoint
from emotion.serving.recognizer import EmotionRecognizer
from tests.conftest import TINY_CORPUS
from tests.stores import Store, run_id_of

CLIPS = 8


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame.filter(like="prob_").to_numpy()


def test_predict_the_served_model_and_evaluate_give_identical_probabilities(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path, capsys, recwarn
) -> None:
    uri, _ = champion
    wavs = sorted(tiny_corpus.glob("*.wav"))[:CLIPS]
    predict.main(["--tracking-uri", store.uri, "--model", uri, "--format", "csv", "-o", str(tmp_path / "p.csv"),
                  *map(str, wavs)])  # fmt: skip
    predicted = pd.read_csv(tmp_path / "p.csv").set_index("file").loc[list(map(str, wavs))]

    mlflow.set_tracking_uri(store.uri)
    served = mlflow.pyfunc.load_model(uri).predict(
        pd.DataFrame({"audio": [base64.b64encode(w.read_bytes()).decode() for w in wavs]})
    )

    corpus = [f"paths.cache_dir={store.cache_dir}", *(f"data.synthetic.{k}={v}" for k, v in TINY_CORPUS.items())]
    evaluate.main([uri, *corpus, "--tracking-uri", store.uri])
    assert "Downloading artifacts" not in capsys.readouterr().err  # no progress bar for a few small files
    assert not [w for w in recwarn if "dataset source" in str(w.message)]
    (run,) = store.client.search_runs([store.client.get_experiment_by_name(evaluate.EXPERIMENT).experiment_id])
    assert run.info.artifact_uri.startswith((store.folder / "mlartifacts").resolve().as_uri())  # not ./mlruns
    logged = store.client.download_artifacts(run.info.run_id, evaluate.PREDICTIONS_ARTIFACT, str(tmp_path))
    evaluated = pd.read_csv(logged).set_index("file").loc[list(map(str, wavs))]

    np.testing.assert_allclose(probabilities(served), probabilities(predicted), atol=1e-4)  # CSV: 4 decimals
    # float32 to its last digits: the clips share a batch with other clips in the evaluation, not in the request
    np.testing.assert_allclose(probabilities(evaluated), probabilities(served), atol=1e-6)
    assert served["emotion"].tolist() == predicted["emotion"].tolist() == evaluated["emotion"].tolist()


def test_a_runs_checkpoint_is_restored_alone_in_another_folder_and_classifies_padded_batches_alike(
    store: Store, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = store.configs[run_id_of(store, "a")]
    (checkpoint,) = Path(cfg.paths.output_dir, "checkpoints").rglob("*.ckpt")
    alone = tmp_path / "alone" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copy(checkpoint, alone)
    monkeypatch.chdir(alone.parent)  # nothing of the project or the run beside it

    recognizer = EmotionRecognizer.from_checkpoint(alone)
    assert recognizer.classes == tuple(cfg.data.classes)
    wavs = sorted(tiny_corpus.glob("*.wav"))[:3]
    waves = [torch.from_numpy(sf.read(w, dtype="float32")[0]) for w in wavs]
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([len(w) for w in waves])
    from_batch = recognizer.classify_batch(padded, lengths).probabilities
    torch.testing.assert_close(from_batch, recognizer.classify_files(wavs).probabilities)
    torch.testing.assert_close(from_batch.sum(dim=1), torch.ones(3))


def test_a_checkpoint_without_its_recipe_is_refused_in_one_line(store: Store, tmp_path: Path) -> None:
    cfg = store.configs[run_id_of(store, "a")]
    (checkpoint,) = Path(cfg.paths.output_dir, "checkpoints").rglob("*.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    del saved["hyper_parameters"]["recipe"]
    torch.save(saved, tmp_path / "old.ckpt")
    with pytest.raises(StaleCheckpoint, match="train the run again") as refused:
        EmotionRecognizer.from_checkpoint(tmp_path / "old.ckpt")
    assert "\n" not in str(refused.value)


def test_a_run_records_its_encoder_folder_by_its_name_alone_never_a_path_of_its_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models" / "whisper-base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "models")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", ["experiment=whisper_base", "features.encoder=./whisper-base"])
    recipe = inference_recipe(cfg)
    assert recipe["features"]["encoder"] == "whisper-base"
    assert str(tmp_path) not in repr(recipe)  # the model file holds no path of the machine that trained it
    assert cfg.features.encoder == "./whisper-base"  # the config keeps what the user wrote


def test_an_encoder_that_is_not_here_is_one_line_naming_where_to_put_it_or_how_to_carry_it(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENCODER_DIRS, str(tmp_path / "encoders"))
    cfg = store.configs[run_id_of(store, "a")]
    (checkpoint,) = Path(cfg.paths.output_dir, "checkpoints").rglob("*.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    recipe = saved["hyper_parameters"]["recipe"]
    gone = tmp_path / "an-encoder-moved-away"  # the folder an older model recorded, since moved or deleted
    recipe["features"] = {"_target_": "emotion.data.ssl.SSLLayers", "spectral": recipe["features"]["spectral"],
                          "encoder": str(gone)}  # fmt: skip
    torch.save(saved, tmp_path / "model.ckpt")
    with pytest.raises(ConfigError) as refused:
        EmotionRecognizer.from_checkpoint(tmp_path / "model.ckpt")
    message = str(refused.value)
    assert "\n" not in message and "an-encoder-moved-away" in message and str(tmp_path) not in message
    assert ENCODER_DIRS in message and "emotion-promote --with-upstream" in message


def test_a_model_registered_before_the_recognizer_is_refused_in_one_line_saying_how_to_retrain(
    store: Store, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    """Models logged as config.yaml + weights.pt (rebuilt from the run's config) do not load: they are refused."""
    (tmp_path / "config.yaml").write_text("data: {classes: [angry]}\n")
    torch.save({"model.weight": torch.zeros(1)}, tmp_path / "weights.pt")
    run = store.client.create_run(store.client.get_experiment_by_name("emotion").experiment_id, run_name="old")
    mlflow.set_tracking_uri(store.uri)
    info = Model.log(
        artifact_path=None,
        name="model",
        flavor=mlflow.pyfunc,
        run_id=run.info.run_id,
        python_model=str(Path(pyfunc.__file__).with_name("pyfunc_entry.py")),
        artifacts={"config": str(tmp_path / "config.yaml"), "weights": str(tmp_path / "weights.pt")},
    )
    version = mlflow.register_model(info.model_uri, "old-layout")
    with pytest.raises(SystemExit) as exited:
        predict.main(["--tracking-uri", store.uri, "--model", f"models:/old-layout/{version.version}",
                      str(next(tiny_corpus.glob("*.wav")))])  # fmt: skip
    assert exited.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "older emotion" in error and "train its run again" in error


def test_a_scikit_learn_head_is_saved_with_skops_restored_alone_and_classifies_as_its_estimator(
    tiny_corpus: Path, tmp_path: Path
) -> None:

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        features_config = OmegaConf.to_container(compose("config", ["features=mel_mean"]).features, resolve=True)
    recipe = {"features": features_config, "front_end": {"min_duration": 0.25, "max_duration": 300.0}}
    front_end = AudioFrontEnd(instantiate(features_config))
    clips = read_corpus(tiny_corpus).clips
    classes = sorted({c.emotion for c in clips})
    inputs = front_end.inputs([front_end.prepare(front_end.decode(c.path)) for c in clips])
    head = EstimatorHead(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), classes, list(inputs))
    head.estimator.fit(head.rows(inputs), [classes.index(c.emotion) for c in clips])
    trained = EmotionRecognizer(head, front_end, recipe)
    trained.save(tmp_path / trained.file_name)

    restored = EmotionRecognizer.from_checkpoint(tmp_path / "model.skops")
    expected = head.estimator.predict_proba(head.rows(inputs))[:5]
    classified = restored.classify_files([c.path for c in clips[:5]])
    np.testing.assert_allclose(classified.probabilities.numpy(), expected, atol=1e-6)
    assert restored.classes == tuple(classes) and classified.frame()["emotion"].isin(classes).all()


def test_a_skops_file_that_names_code_to_run_is_refused_unread(tmp_path: Path) -> None:

    state = {"estimator": FunctionTransformer(func=os.system), "classes": [], "input_names": [], "recipe": {}}
    skops.io.dump(state, tmp_path / "evil.skops")
    with pytest.raises(UntrustedFile, match=r"evil\.skops holds types skops does not trust \(posix\.system\)"):
        EmotionRecognizer.from_checkpoint(tmp_path / "evil.skops")
