"""Frozen self-supervised features end to end, on a small randomly initialised upstream: no weights to download.

The upstream is built by torchaudio's own architecture class of the WAVLM_BASE_PLUS bundle
(`torchaudio.models.wavlm_model`), at a tiny size, and saved as a checkpoint file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from emotion.cli import promote
from emotion.data.features import Spectral
from emotion.data.ssl import SSLLayers
from emotion.encoders import length_batches
from emotion.errors import ConfigError
from emotion.pipeline import train
from tests.conftest import FEW_BATCHES, finished_runs

TINY_WAVLM = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": [(32, 10, 5), (32, 3, 2), (32, 2, 2)],
    "extractor_conv_bias": False,
    "encoder_embed_dim": 32,
    "encoder_projection_dropout": 0.0,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 3,
    "encoder_num_heads": 2,
    "encoder_max_distance": 100,
    "encoder_num_buckets": 32,
    "encoder_attention_dropout": 0.0,
    "encoder_ff_interm_features": 64,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.0,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.0,
    "aux_num_out": None,
}


@pytest.fixture(scope="module")
def tiny_upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = torchaudio.models.wavlm_model(**TINY_WAVLM)
    path = tmp_path_factory.mktemp("upstream") / "tiny-wavlm.pt"
    torch.save({"params": TINY_WAVLM, "state_dict": model.state_dict()}, path)
    return path


def test_a_missing_upstream_checkpoint_is_one_line_naming_both_ways_to_weights() -> None:
    with pytest.raises(ConfigError) as refused:
        SSLLayers(Spectral(), encoder="WAVLM_BASE_PLUS", checkpoint="/nowhere/wavlm.pt")
    message = str(refused.value)
    assert "\n" not in message
    assert (
        "features.checkpoint=/nowhere/wavlm.pt: no such file" in message
        and "download them through torchaudio" in message
    )


TINY_HUBERT = {k: v for k, v in TINY_WAVLM.items() if k not in ("encoder_max_distance", "encoder_num_buckets")}


@pytest.mark.parametrize(
    ("upstream", "build", "params"),
    [
        ("WAVLM_BASE_PLUS", torchaudio.models.wavlm_model, TINY_WAVLM),
        ("HUBERT_BASE", torchaudio.models.wav2vec2_model, TINY_HUBERT),
    ],
)
def test_batched_extraction_gives_each_clip_the_layers_torchaudio_gives_it_alone(
    upstream: str, build, params: dict, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build(**params).eval()
    checkpoint = tmp_path / "upstream.pt"
    torch.save({"params": params, "state_dict": model.state_dict()}, checkpoint)
    waves = [0.1 * torch.randn(n) for n in (16000, 24000, 8000, 23000, 40000)]
    features = SSLLayers(Spectral(), encoder=upstream, checkpoint=str(checkpoint), batch_seconds=60)

    batched = features.of_clips(waves)["ssl"]

    with torch.no_grad():
        alone = [torch.stack([layer[0].mean(dim=0) for layer in model.extract_features(w[None])[0]]) for w in waves]
    assert batched.shape == (5, params["encoder_num_layers"], params["encoder_embed_dim"])
    torch.testing.assert_close(batched, torch.stack(alone), atol=1e-5, rtol=1e-5)
    assert [len(b) for b in length_batches([len(w) for w in waves], 60 * 16000)] == [5]  # all in one padded batch
    assert length_batches([3, 1, 2], padded_budget=4) == [[1, 2], [0]]  # by length, padded within the budget


def test_ssl_features_cache_train_test_promote_and_predict_with_learned_layer_weights(
    make_config, tracking_uri: str, tiny_upstream: Path, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    overrides = ["features=ssl", f"features.checkpoint={tiny_upstream}", "model=ssl_head", *FEW_BATCHES]
    train(make_config(*overrides, "trainer.max_epochs=2"))
    train(make_config(*overrides, "seed=1"))
    first, second = finished_runs(tracking_uri)
    assert int(first.data.params["features_computed"]) > 0
    assert (second.data.params["features_computed"], second.data.params["features_cached"]) == (
        "0",
        first.data.params["features_computed"],
    )  # the second run never ran the upstream

    client = mlflow.MlflowClient(tracking_uri)
    weights = [first.data.metrics[f"layer_weight/{i:02d}"] for i in range(TINY_WAVLM["encoder_num_layers"])]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert max(abs(w - 1 / 3) for w in weights) > 1e-6  # learned: no longer the uniform start
    assert len(client.get_metric_history(first.info.run_id, "layer_weight/00")) == 2  # logged every epoch

    promote.main(["--tracking-uri", tracking_uri, "--name", "ssl", "--with-upstream"])
    assert "the model carries the weights of its encoder WAVLM_BASE_PLUS:" in capsys.readouterr().out
    shutil.move(tiny_upstream, tmp_path / "moved.pt")  # the served model must not need the original file
    try:
        mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.pyfunc.load_model("models:/ssl@champion")
        samples, rate = sf.read(sorted(tiny_corpus.glob("*.wav"))[0], dtype="float32")
        predicted = model.predict(pd.DataFrame({"waveform": [samples.tolist()], "sample_rate": [rate]}))
    finally:
        shutil.move(tmp_path / "moved.pt", tiny_upstream)
    assert predicted["emotion"][0] in {"angry", "disgust", "fear", "happy", "neutral", "sad"}
    assert predicted.filter(like="prob_").sum(axis=1)[0] == pytest.approx(1.0, abs=1e-5)


def test_every_pooling_reads_one_cache_of_each_layers_mean_and_std(tiny_upstream: Path) -> None:
    waves = [0.1 * torch.randn(n) for n in (16000, 24000)]
    mean_only = SSLLayers(Spectral(), encoder="WAVLM_BASE_PLUS", checkpoint=str(tiny_upstream), pooling="mean")
    both = SSLLayers(Spectral(), encoder="WAVLM_BASE_PLUS", checkpoint=str(tiny_upstream), pooling="mean_std")
    assert mean_only.key() == both.key()  # one cache: the encoder runs once per clip, whichever pooling reads it

    pooled = both.of_clips(waves)["ssl"]
    model = torch.load(tiny_upstream, weights_only=False)
    upstream = torchaudio.models.wavlm_model(**model["params"]).eval()
    upstream.load_state_dict(model["state_dict"])
    with torch.no_grad():
        layers = [torch.stack([layer[0] for layer in upstream.extract_features(w[None])[0]]) for w in waves]
    expected = torch.stack([torch.cat([x.mean(dim=1), x.std(dim=1, unbiased=False)], dim=-1) for x in layers])
    assert pooled.shape == (2, 3, 64)
    torch.testing.assert_close(pooled, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mean_only.of_clips(waves)["ssl"], pooled[..., :32])
    with pytest.raises(ConfigError, match=r"features\.pooling=max: choose one of \['mean', 'mean_std'\]"):
        SSLLayers(Spectral(), encoder="WAVLM_BASE_PLUS", checkpoint=str(tiny_upstream), pooling="max")
