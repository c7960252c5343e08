"""A frozen pretrained speech encoder's layers as features: every layer, pooled over each whole clip.

`features=ssl` runs the encoder `features.encoder` names (see `emotion.encoders`: a torchaudio bundle
such as WAVLM_BASE_PLUS, or a Hugging Face hub id or folder such as `openai/whisper-base`) over each
clip and keeps the mean and the standard deviation over time of every layer. The feature cache stores
both once per clip, so cross-validations and sweeps never run the encoder again, whichever `pooling`
they read: `mean` (layers, width) or `mean_std` (layers, 2 * width: the mean, then the std).
`model=ssl_head` learns a softmax-weighted sum of the layers and a small head, as SUPERB and EmoBox do;
the scikit-learn heads (`model=logreg`, `model=svm`) take one layer, their mean, or all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from emotion.data.features import FeatureSet, Spectral
from emotion.data.windows import Window
from emotion.encoders import Encoder, load_encoder
from emotion.encoders.base import Precision, resolved_precision
from emotion.encoders.huggingface import WhisperInput
from emotion.errors import ConfigError

Pooling = Literal["mean", "mean_std"]
POOLINGS = ("mean", "mean_std")


class SSLLayers(FeatureSet):
    """Each layer of a frozen encoder pooled over the whole (trimmed) clip: (layers, width), or (layers, 2 * width)
    with `pooling=mean_std`."""

    name = "ssl"
    whole_clip = True
    cheap_to_compute = False

    def __init__(
        self,
        spectral: Spectral,
        encoder: str | Encoder = "WAVLM_BASE_PLUS",
        checkpoint: str | None = None,
        whisper_input: WhisperInput = "pad30",
        batch_seconds: float = 60.0,
        pooling: Pooling = "mean",
        window: Window | None = None,
        precision: Precision = "fp32",
    ) -> None:
        super().__init__(spectral, window)
        if pooling not in POOLINGS:
            raise ConfigError(f"features.pooling={pooling}: choose one of {list(POOLINGS)}")
        self.pooling = pooling
        if self.window.whole_utterance:
            raise ConfigError("features=ssl already pools each whole clip: use features/window=crop")
        # An Encoder given as such: a saved model's, found where its host keeps it (emotion.serving.encoder_refs).
        self.encoder = encoder if isinstance(encoder, Encoder) else load_encoder(encoder, checkpoint, whisper_input)
        if self.encoder.sample_rate != self.sample_rate:
            rate = self.encoder.sample_rate
            raise ConfigError(f"{self.encoder.source} takes {rate} Hz audio: set features.spectral.sample_rate={rate}")
        self.batch_samples = int(batch_seconds * self.sample_rate)
        self.encoder.precision = resolved_precision(precision, self.encoder.device)

    def params(self) -> dict:
        """What the cache stores (not `pooling`: every pooling reads the same cached statistics)."""
        size = {"layers": self.encoder.num_layers, "width": self.encoder.width, "stored": "mean,std"}
        bf16 = {"precision": "bf16"} if self.encoder.precision == "bf16" else {}  # fp32 keys what it always keyed
        return {"name": self.name, **self.encoder.identity(), **bf16, **size, "sample_rate": self.sample_rate,
                **self._trim_params()}  # fmt: skip

    def shapes(self) -> dict[str, tuple[int, ...]]:
        width = self.encoder.width * (2 if self.pooling == "mean_std" else 1)
        return {"ssl": (self.encoder.num_layers, width)}

    def stored_names(self) -> tuple[str, ...]:
        return ("ssl_mean", "ssl_std")

    def stored_of_clips(self, waveforms: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each clip's layers' mean and std over its frames; on the GPU when there is one, in padded batches."""
        mean, std = self.encoder.pooled_statistics(waveforms, self.batch_samples)
        return {"ssl_mean": mean, "ssl_std": std}

    def view(self, stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The pooling's features of the cached statistics."""
        if self.pooling == "mean":
            return {"ssl": stored["ssl_mean"]}
        return {"ssl": torch.cat([stored["ssl_mean"], stored["ssl_std"]], dim=-1)}

    def of_clips(self, waveforms: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each clip's pooled layers (`pooling`)."""
        return self.view(self.stored_of_clips(waveforms))

    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.of_clips(list(waveforms))

    def save_encoder(self, folder: Path) -> None:
        """Write the encoder into the empty `folder`, for `emotion.encoders.saved_encoder_overrides` to read."""
        self.encoder.save(folder)
