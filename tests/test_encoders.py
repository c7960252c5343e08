"""Pretrained speech encoders behind one interface: the real Whisper-base checkpoint of ../shared/models, and the
`transformers` wav2vec2, WavLM and HuBERT paths on small randomly initialised models built here."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import soundfile as sf
import torch
from optuna.trial import TrialState
from transformers import (
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from emotion.cli import evaluate, predict, promote
from emotion.data.features import Spectral
from emotion.data.ssl import SSLLayers
from emotion.encoders import load_encoder
from emotion.encoders.huggingface import WhisperEncoderLayers
from emotion.errors import ConfigError
from emotion.pipeline import train
from tests.conftest import FEW_BATCHES, TINY_CORPUS, finished_runs

SHARED = Path(__file__).resolve().parents[2] / "shared"
WHISPER = SHARED / "models" / "whisper-base"
EMODB = SHARED / "data" / "emodb" / "wav"
needs_whisper = pytest.mark.skipif(not (WHISPER / "model.safetensors").is_file(), reason=f"no checkpoint at {WHISPER}")


def emodb_clips(count: int) -> list[torch.Tensor]:
    """The first `count` Emo-DB clips (1.5 to 3.5 s), as 16 kHz waveforms."""
    return [torch.from_numpy(sf.read(path, dtype="float32")[0]) for path in sorted(EMODB.glob("*.wav"))[:count]]


@pytest.fixture(scope="module")
def whisper() -> WhisperEncoderLayers:
    encoder = load_encoder(str(WHISPER), whisper_input="cut")
    assert isinstance(encoder, WhisperEncoderLayers)
    return encoder


@needs_whisper
def test_whisper_base_gives_its_input_embeddings_and_six_layers_of_512_for_each_frame_of_a_clip(whisper) -> None:
    waves = emodb_clips(2)
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([len(w) for w in waves])

    layers, frames = whisper.hidden_states(padded, lengths)

    assert (whisper.num_layers, whisper.width, whisper.sample_rate) == (7, 512, 16000)
    assert len(layers) == 7
    assert frames.tolist() == [(n + 319) // 320 for n in lengths.tolist()]  # 50 frames a second: 20 ms each
    assert all(layer.shape == (2, int(frames.max()), 512) for layer in layers)


@needs_whisper
def test_a_clips_pooled_whisper_layers_do_not_depend_on_what_else_is_in_its_batch(whisper) -> None:
    waves = emodb_clips(5)

    batched = whisper.pooled_statistics(waves, batch_samples=60 * 16000)[0]
    alone = torch.cat([whisper.pooled_statistics([wave], batch_samples=1)[0] for wave in waves])

    assert batched.shape == (5, 7, 512)
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)


@needs_whisper
def test_cut_input_on_a_full_30_s_clip_is_whispers_own_encoder_forward(whisper) -> None:
    """The cut policy is our copy of WhisperEncoder.forward; on 3000 frames it must be transformers' own."""
    wave = torch.cat(emodb_clips(20))[: 30 * 16000]
    assert len(wave) == 30 * 16000
    padded = load_encoder(str(WHISPER), whisper_input="pad30")
    padded._model = whisper.model  # the same weights, not loaded twice

    torch.testing.assert_close(
        whisper.pooled_statistics([wave], 10**9)[0], padded.pooled_statistics([wave], 10**9)[0], atol=1e-4, rtol=1e-4
    )


@needs_whisper
def test_clips_longer_than_30_s_are_encoded_in_30_s_windows_weighted_by_their_frames(whisper) -> None:
    first, second = torch.cat(emodb_clips(20))[: 30 * 16000], emodb_clips(1)[0]

    pooled = whisper.pooled_statistics([torch.cat([first, second])], 10**9)[0]

    parts = whisper.pooled_statistics([first, second], 10**9)[0]
    frames = torch.tensor([1500.0, (len(second) + 319) // 320])
    expected = (parts * frames[:, None, None]).sum(dim=0) / frames.sum()
    torch.testing.assert_close(pooled[0], expected, atol=1e-4, rtol=1e-4)


@needs_whisper
def test_features_ssl_reads_whisper_from_a_folder_and_keys_its_cache_by_the_input_policy() -> None:
    cut = SSLLayers(Spectral(), encoder=str(WHISPER), whisper_input="cut")
    pad30 = SSLLayers(Spectral(), encoder=str(WHISPER), whisper_input="pad30")

    assert cut.shapes() == {"ssl": (7, 512)}
    assert cut.key() != pad30.key()
    assert cut.encoder._model is None  # nothing loaded until a clip is encoded


@needs_whisper
def test_whispers_log_mel_of_a_clips_own_frames_is_its_feature_extractors_on_the_30_s_input(whisper) -> None:
    """The cut policy's front end reads only the clip, yet gives the extractor's numbers: cached features stay valid."""
    waves = emodb_clips(3)
    waves[1] = waves[1][:12345]  # a length that is not a whole number of hops
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([len(w) for w in waves])
    extracted = whisper.extractor([w.numpy() for w in waves], sampling_rate=16000, return_tensors="pt").input_features
    frames = int(2 * (((lengths.max() + 159) // 160 + 1) // 2))  # even, as the encoder's stride asks

    torch.testing.assert_close(whisper.log_mel(padded, lengths, frames), extracted[..., :frames], atol=0, rtol=0)
    whole = torch.cat(emodb_clips(20))[None, : 30 * 16000]
    on_30_s = whisper.extractor(whole[0].numpy(), sampling_rate=16000, return_tensors="pt").input_features
    torch.testing.assert_close(whisper.log_mel(whole, torch.tensor([30 * 16000]), 3000), on_30_s, atol=0, rtol=0)


@needs_whisper
def test_bf16_precision_keys_its_own_cache_and_stays_close_to_fp32_whose_cache_key_is_unchanged(whisper) -> None:
    fp32 = SSLLayers(Spectral(), encoder=str(WHISPER), whisper_input="cut")
    bf16 = SSLLayers(Spectral(), encoder=str(WHISPER), whisper_input="cut", precision="bf16")
    assert "precision" not in fp32.params() and bf16.params()["precision"] == "bf16"
    assert fp32.key() != bf16.key()
    with pytest.raises(ConfigError, match=r"features\.precision=fp16: choose one of"):
        SSLLayers(Spectral(), encoder=str(WHISPER), precision="fp16")
    waves = emodb_clips(1)

    exact = whisper.pooled_statistics(waves, 10**9)[0]
    whisper.precision = "bf16"
    try:
        fast = whisper.pooled_statistics(waves, 10**9)[0]
    finally:
        whisper.precision = "fp32"

    assert not torch.equal(fast, exact)  # autocast did run the layers in bfloat16
    torch.testing.assert_close(fast, exact, atol=0.05 * float(exact.abs().max()), rtol=0)


SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (32, 32, 32),
    "conv_stride": (5, 2, 2),
    "conv_kernel": (10, 3, 2),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}


@pytest.mark.parametrize(
    ("config", "model"),
    [
        (Wav2Vec2Config(**SMALL), Wav2Vec2Model),
        (Wav2Vec2Config(**SMALL, feat_extract_norm="layer", do_stable_layer_norm=True), Wav2Vec2Model),
        (WavLMConfig(**SMALL, num_buckets=32, max_bucket_distance=100), WavLMModel),
        (HubertConfig(**SMALL), HubertModel),
    ],
    ids=["wav2vec2", "wav2vec2-large-layout", "wavlm", "hubert"],
)
def test_batched_wav2vec2_family_layers_equal_transformers_output_hidden_states_of_each_clip_alone(
    config, model, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    network = model(config).eval()
    network.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path)
    waves = [0.1 * torch.randn(n) for n in (16000, 24000, 8000, 23000)]
    encoder = load_encoder(str(tmp_path))

    batched = encoder.pooled_statistics(waves, batch_samples=60 * 16000)[0]

    with torch.no_grad():
        alone = []
        for wave in waves:
            normalised = (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)
            states = network(normalised[None], output_hidden_states=True).hidden_states
            alone.append(torch.stack([state[0].mean(dim=0) for state in states]))
    assert batched.shape == (4, 3, 32)
    torch.testing.assert_close(batched, torch.stack(alone), atol=1e-5, rtol=1e-5)


def test_a_hub_id_not_in_the_cache_is_one_line_naming_both_ways_to_weights(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    with pytest.raises(ConfigError) as refused:
        load_encoder("openai/whisper-base")

    message = str(refused.value)
    assert "\n" not in message
    assert "hf download openai/whisper-base" in message and "features.encoder at a folder" in message


@pytest.mark.parametrize("split", ["speaker", "loso"])
def test_an_encoder_that_cannot_load_stops_training_before_any_run_is_opened(
    make_config, tracking_uri: str, tmp_path: Path, monkeypatch, split: str
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = make_config("experiment=whisper_base", "features.encoder=openai/whisper-base", f"split={split}")
    with pytest.raises(ConfigError, match="hf download openai/whisper-base"):
        train(cfg)
    experiment = mlflow.MlflowClient(tracking_uri).get_experiment_by_name("emotion")
    assert experiment is None or mlflow.MlflowClient(tracking_uri).search_runs([experiment.experiment_id]) == []


def test_a_missing_folder_and_a_folder_of_another_kind_of_model_are_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder"):
        load_encoder(str(tmp_path / "nowhere"))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="is a bert model: choose a Whisper or a wav2vec2-family"):
        load_encoder(str(tmp_path))
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests never reach the hub


@needs_whisper
def test_whisper_trains_cross_validates_promotes_with_its_encoder_and_predicts_with_the_folder_out_of_reach(
    make_config, tracking_uri: str, tiny_corpus: Path, cache_dir: Path, tmp_path: Path, capsys
) -> None:
    link = tmp_path / "whisper-base"  # the folder the run names, gone before the model predicts
    link.symlink_to(WHISPER, target_is_directory=True)
    run = ["experiment=whisper_base", f"features.encoder={link}", "features.whisper_input=cut", *FEW_BATCHES]
    cv_store = f"sqlite:///{tmp_path / 'cv.db'}"
    train(make_config(*run, "split=kfold", "split.n_folds=2", f"logger.tracking_uri={cv_store}"))
    train(make_config(*run))

    parent = next(r for r in finished_runs(cv_store) if r.data.tags.get("role") == "cv")
    assert sum(parent.data.metrics[f"layer_weight/{i:02d}_mean"] for i in range(7)) == pytest.approx(1.0, abs=1e-5)
    for run_id in [r.info.run_id for r in finished_runs(cv_store)]:
        artifacts = [a.path for a in mlflow.MlflowClient(cv_store).list_artifacts(run_id)]
        assert "layer_weights.png" in artifacts  # each fold's, and the parent's mean ± std
    (single,) = finished_runs(tracking_uri)
    assert single.data.params["features_computed"] == "0"  # the CV's folds cached every clip

    promote.main(["--tracking-uri", tracking_uri, "--name", "whisper"])  # the champion names its encoder's folder
    capsys.readouterr()
    promote.main(["--tracking-uri", tracking_uri, "--name", "whisper", "--with-upstream"])  # now it carries it
    carried = capsys.readouterr().out
    champion = mlflow.MlflowClient(tracking_uri).get_model_version_by_alias("whisper", "champion")
    assert (str(champion.version), champion.tags["with_upstream"]) == ("2", "true") and "registered run" in carried
    megabytes = float(carried.split("the model carries the weights of its encoder ")[1].split(": ")[1].split(" MB")[0])
    assert 35 < megabytes < 50  # the encoder alone (20.6 M parameters), float16 as stored; not the decoder
    link.unlink()

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model("models:/whisper@champion")
    wav = sorted(EMODB.glob("*.wav"))[0]
    predicted = model.predict(pd.DataFrame({"audio": [base64.b64encode(wav.read_bytes()).decode()]}))
    assert predicted["emotion"][0] in {"angry", "disgust", "fear", "happy", "neutral", "sad"}
    assert predicted.filter(like="prob_").sum(axis=1)[0] == pytest.approx(1.0, abs=1e-5)
    predict.main([str(wav), "--model", "models:/whisper@champion", "--tracking-uri", tracking_uri, "--format", "json"])
    (record,) = json.loads(capsys.readouterr().out)
    assert record["emotion"] == predicted["emotion"][0]
    corpus = [f"paths.cache_dir={cache_dir}", *(f"data.synthetic.{k}={v}" for k, v in TINY_CORPUS.items())]
    evaluate.main(["models:/whisper@champion", *corpus, "--tracking-uri", tracking_uri])
    (evaluation,) = finished_runs(tracking_uri, "evaluations")
    assert 0 <= evaluation.data.metrics["eval/uar"] <= 1 and evaluation.data.params["clips"] == "72"


@needs_whisper
def test_a_study_of_the_whisper_head_searches_its_space_over_cached_layers(tmp_path: Path, cache_dir: Path) -> None:
    sweep = [
        sys.executable, "-m", "emotion.cli.train", "--multirun", "sweep=whisper_head", "hydra.sweeper.n_trials=3",
        f"features.encoder={WHISPER}", "features.whisper_input=cut", "trainer.max_epochs=2",
        f"hydra.sweep.dir={tmp_path}/multirun",
        *(f"data.synthetic.{k}={v}" for k, v in TINY_CORPUS.items()),
        "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    ]  # fmt: skip
    store = f"sqlite:///{tmp_path}/mlruns.db"
    env = {**os.environ, "EMOTION_CACHE_DIR": str(cache_dir), "MLFLOW_TRACKING_URI": store}
    done = subprocess.run(sweep, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    study = optuna.load_study(study_name="whisper_head", storage=f"sqlite:///{tmp_path}/multirun/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:
        assert trial.params["model.net.hidden"] in (0, 128, 256) and trial.params["model.net.layer_norm"] in (
            False,
            True,
        )
        assert 3e-4 <= trial.params["model.optimizer.lr"] <= 1e-2
    trials = [r for r in finished_runs(store) if r.data.tags.get("trial_number")]
    assert len(trials) == 3
    assert all(int(r.data.params["features_computed"]) == 0 for r in trials[1:])  # the encoder ran for one trial
