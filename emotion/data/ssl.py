"""A frozen pretrained speech encoder's layers as features: every layer, mean-pooled over each whole clip.

`features=ssl` runs the encoder `features.encoder` names (see `emotion.encoders`: a torchaudio bundle
such as WAVLM_BASE_PLUS, or a Hugging Face hub id or folder such as `openai/whisper-base`) over each
clip and keeps the mean over time of every layer, shaped (layers, width). The feature cache stores
them once per clip, so cross-validations and sweeps never run the encoder again; `model=ssl_head`
learns a softmax-weighted sum of the layers and a small head, as SUPERB and EmoBox do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from emotion.data.features import FeatureSet, Spectral
from emotion.data.windows import Window
from emotion.encoders import Encoder, load_encoder
from emotion.encoders.huggingface import WhisperInput
from emotion.errors import ConfigError


class SSLLayers(FeatureSet):
    """Each layer of a frozen encoder, mean-pooled over the whole (trimmed) clip: (layers, width)."""

    name = "ssl"
    whole_clip = True
    cheap_to_compute = False

    def __init__(
        self,
        spectral: Spectral,
        encoder: str = "WAVLM_BASE_PLUS",
        checkpoint: str | None = None,
        whisper_input: WhisperInput = "pad30",
        batch_seconds: float = 60.0,
        window: Window | None = None,
    ) -> None:
        super().__init__(spectral, window)
        if self.window.whole_utterance:
            raise ConfigError("features=ssl already pools each whole clip: use features/window=crop")
        self.encoder: Encoder = load_encoder(encoder, checkpoint, whisper_input)
        if self.encoder.sample_rate != self.sample_rate:
            rate = self.encoder.sample_rate
            raise ConfigError(f"{encoder} takes {rate} Hz audio: set features.spectral.sample_rate={rate}")
        self.batch_samples = int(batch_seconds * self.sample_rate)

    def params(self) -> dict:
        size = {"layers": self.encoder.num_layers, "width": self.encoder.width}
        return {"name": self.name, **self.encoder.identity(), **size, "sample_rate": self.sample_rate,
                **self._trim_params()}  # fmt: skip

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"ssl": (self.encoder.num_layers, self.encoder.width)}

    def of_clips(self, waveforms: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each clip's layers, mean-pooled over its frames; on the GPU when there is one, in padded batches."""
        return {"ssl": self.encoder.pooled_layers(waveforms, self.batch_samples)}

    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.of_clips(list(waveforms))

    def save_encoder(self, folder: Path) -> None:
        """Write the encoder into the empty `folder`, for `emotion.encoders.saved_encoder_overrides` to read."""
        self.encoder.save(folder)
