"""The registered model (an MLflow pyfunc): it predicts what the LightningModule predicts, carries what it needs,
and loads weights only."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate

from emotion.models.module import EmotionClassifier
from emotion.serving.requests import AUDIO_DIRS
from tests.stores import TINY_MODEL, Store


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
    assert info.signature.outputs.input_names()[:5] == [
        "emotion",
        "confidence",
        "silent",
        "normalization",
        "prob_angry",
    ]
    assert info.saved_input_example_info is not None
    model_dir = Path(mlflow.artifacts.download_artifacts(uri))
    assert (model_dir / "code" / "emotion" / "serving" / "recognizer.py").is_file()
    checkpoint = torch.load(next(model_dir.rglob("model.ckpt")), weights_only=True)
    assert all(k.startswith(("model.", "standardizer.")) for k in checkpoint["state_dict"])
    assert set(checkpoint["hyper_parameters"]["recipe"]) == {"net", "features", "front_end", "normalize"}
