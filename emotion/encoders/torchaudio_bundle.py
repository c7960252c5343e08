"""torchaudio pipeline bundles (WAVLM_BASE_PLUS, HUBERT_BASE, WAV2VEC2_BASE, ...) as encoders.

Weights come from torchaudio's own download (once, into torch.hub's cache, at the user's site) or from
`features.checkpoint=/path`: a state dict of the bundle's architecture, or `{"params": ..., "state_dict": ...}`
for an architecture of other sizes (as the tests' small, randomly initialised upstreams). The hidden states
are the transformer layers' outputs, as torchaudio's `extract_features` gives them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchaudio
from torchaudio.models.wav2vec2.wavlm_attention import WavLMSelfAttention

from emotion.encoders.base import SAVED_CHECKPOINT, Encoder, frame_mask, per_clip_frames
from emotion.errors import ConfigError


def bundle_names() -> list[str]:
    """The names of torchaudio's wav2vec2-family pipeline bundles."""
    return sorted(n for n in dir(torchaudio.pipelines) if hasattr(getattr(torchaudio.pipelines, n), "_params"))


def is_bundle(name: str) -> bool:
    return name in bundle_names()


def bundle_of(name: str) -> Any:
    """The torchaudio pipeline bundle `name`; ConfigError listing the names there are."""
    if not is_bundle(name):
        raise ConfigError(f"features.encoder={name} is not a torchaudio bundle; choose one of {bundle_names()}")
    return getattr(torchaudio.pipelines, name)


def read_checkpoint(name: str, checkpoint: str) -> dict[str, Any]:
    """The checkpoint file's tensors, memory-mapped (read as used); ConfigError naming both ways to weights."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"features.checkpoint={checkpoint}: no such file; point it at the weights of {name}, or leave it "
            "empty to download them through torchaudio (once, then cached)"
        )
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def transformer_layers(encoder: torch.nn.Module, frames: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's output for padded front-end frames (batch, frames, channels), padding masked out of attention.

    torchaudio's `Encoder.extract_features` masks padding for wav2vec2 and HuBERT but refuses a mask for
    WavLM, whose attention takes a key padding mask instead: the layers are run here to give each its own.
    """
    x, attention_mask = encoder._preprocess(frames, lengths)  # projects, zeroes the padded frames
    x = encoder.transformer._preprocess(x)  # adds the convolutional position embedding
    padding = ~frame_mask(lengths, x.shape[1])
    key_padding = torch.zeros(padding.shape, dtype=x.dtype, device=x.device).masked_fill(padding, float("-inf"))
    outputs, position_bias = [], None
    for layer in encoder.transformer.layers:
        if isinstance(layer.attention, WavLMSelfAttention):
            x, position_bias = layer(x, position_bias=position_bias, key_padding_mask=key_padding)
        else:
            x, position_bias = layer(x, attention_mask, position_bias=position_bias)
        outputs.append(x)
    return outputs


class TorchaudioEncoder(Encoder):
    """A torchaudio bundle's upstream (`Wav2Vec2Model`): its transformer layers."""

    def __init__(self, bundle: str, checkpoint: str | None = None) -> None:
        super().__init__()
        self.bundle = bundle_of(bundle)
        self.source, self.checkpoint = bundle, checkpoint
        saved = read_checkpoint(bundle, checkpoint) if checkpoint else {}
        self.architecture = dict(saved["params"]) if "state_dict" in saved else dict(self.bundle._params)
        self.sample_rate = int(self.bundle.sample_rate)
        self.num_layers = int(self.architecture["encoder_num_layers"])
        self.width = int(self.architecture["encoder_embed_dim"])
        self.normalize_waveform = bool(self.bundle._normalize_waveform)

    def identity(self) -> dict[str, Any]:
        return {"upstream": self.source, "checkpoint": self.checkpoint}

    def load(self) -> torch.nn.Module:
        from torchaudio.pipelines._wav2vec2.utils import _get_model  # the bundle's own architecture builder

        if not self.checkpoint:
            try:
                model = self.bundle.get_model()
            except (OSError, RuntimeError) as exc:  # URLError is an OSError
                raise ConfigError(
                    f"cannot download the weights of {self.source} ({type(exc).__name__}): run once where torchaudio "
                    "can reach the internet (they are cached), or give features.checkpoint=/path/to/weights.pt"
                ) from None
            return getattr(model, "model", model)  # without the wrapper large bundles get: we normalise per clip
        saved = read_checkpoint(self.source, self.checkpoint)
        model = _get_model(self.bundle._model_type, self.architecture)
        model.load_state_dict(saved.get("state_dict", saved))
        return model

    def hidden_states(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The convolutional front end runs one clip at a time (its group norm spans the whole input, so padding
        would change it); the transformer runs on the padded batch, masked."""
        padded, counts = per_clip_frames(waves, lengths, self._front_end)
        return transformer_layers(self.model.encoder, padded, counts), counts

    def _front_end(self, wave: torch.Tensor) -> torch.Tensor:
        """The feature extractor's frames of one clip: (frames, channels)."""
        wave = wave[None]
        if self.normalize_waveform:  # what torchaudio's wrapper does for large bundles, here per clip
            wave = torch.nn.functional.layer_norm(wave, wave.shape)
        return self.model.feature_extractor(wave, None)[0][0]

    def save(self, folder: Path) -> None:
        """The architecture parameters and weights, as one checkpoint file that `features.checkpoint` reads."""
        torch.save({"params": self.architecture, "state_dict": self.model.state_dict()}, folder / SAVED_CHECKPOINT)
