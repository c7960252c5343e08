"""Pretrained speech encoders behind one interface: the real Whisper-base checkpoint of ../shared/models, and the
`transformers` wav2vec2, WavLM and HuBERT paths on small randomly initialised models built here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import soundfile as sf
import torch
from transformers import (
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from emotion.data.features import Spectral
from emotion.data.ssl import SSLLayers
from emotion.encoders import load_encoder
from emotion.encoders.huggingface import WhisperEncoderLayers
from emotion.errors import ConfigError

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

    batched = whisper.pooled_layers(waves, batch_samples=60 * 16000)
    alone = torch.cat([whisper.pooled_layers([wave], batch_samples=1) for wave in waves])

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
        whisper.pooled_layers([wave], 10**9), padded.pooled_layers([wave], 10**9), atol=1e-4, rtol=1e-4
    )


@needs_whisper
def test_clips_longer_than_30_s_are_encoded_in_30_s_windows_weighted_by_their_frames(whisper) -> None:
    first, second = torch.cat(emodb_clips(20))[: 30 * 16000], emodb_clips(1)[0]

    pooled = whisper.pooled_layers([torch.cat([first, second])], 10**9)

    parts = whisper.pooled_layers([first, second], 10**9)
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

    batched = encoder.pooled_layers(waves, batch_samples=60 * 16000)

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


def test_a_missing_folder_and_a_folder_of_another_kind_of_model_are_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder"):
        load_encoder(str(tmp_path / "nowhere"))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="is a bert model: choose a Whisper or a wav2vec2-family"):
        load_encoder(str(tmp_path))
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests never reach the hub
