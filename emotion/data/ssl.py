"""Frozen self-supervised speech upstreams as features: every layer, mean-pooled over each whole clip.

`features=ssl` runs a torchaudio bundle (`features.upstream`: WAVLM_BASE_PLUS, HUBERT_BASE,
WAV2VEC2_BASE, ... from `torchaudio.pipelines`) over each clip and keeps the mean over time of
every transformer layer's output, shaped (layers, dim). The feature cache stores them once per
clip, so sweeps never run the upstream again; `model=ssl_head` learns a softmax-weighted sum of
the layers and a small head, as SUPERB and EmoBox do.

Weights come from torchaudio's own download (once, into torch.hub's cache, at the user's site)
or from `features.checkpoint=/path`: a state dict of the bundle's architecture, or
`{"params": ..., "state_dict": ...}` for an architecture of other sizes (as the tests' small,
randomly initialised upstreams).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torchaudio.models.wav2vec2.wavlm_attention import WavLMSelfAttention

from emotion.data.features import FeatureSet, Spectral
from emotion.data.windows import Window
from emotion.errors import ConfigError


def bundle_of(upstream: str) -> Any:
    """The torchaudio pipeline bundle named `upstream`; ConfigError listing the names there are."""
    bundle = getattr(torchaudio.pipelines, upstream, None)
    if bundle is None or not hasattr(bundle, "_params"):
        names = sorted(n for n in dir(torchaudio.pipelines) if hasattr(getattr(torchaudio.pipelines, n), "_params"))
        raise ConfigError(f"features.upstream={upstream} is not a torchaudio bundle; choose one of {names}")
    return bundle


def read_checkpoint(upstream: str, checkpoint: str) -> dict[str, Any]:
    """The checkpoint file's tensors, memory-mapped (read as used); ConfigError naming both ways to weights."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"features.checkpoint={checkpoint}: no such file; point it at the weights of {upstream}, or leave it "
            "empty to download them through torchaudio (once, then cached)"
        )
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def architecture_of(upstream: str, checkpoint: str | None) -> dict[str, Any]:
    """The upstream's architecture parameters: the bundle's, or those a checkpoint of other sizes carries."""
    bundle = bundle_of(upstream)
    saved = read_checkpoint(upstream, checkpoint) if checkpoint else {}
    return dict(saved["params"]) if "state_dict" in saved else dict(bundle._params)


def load_upstream(upstream: str, checkpoint: str | None, architecture: dict[str, Any]) -> torch.nn.Module:
    """The frozen upstream (a torchaudio `Wav2Vec2Model`) in eval mode: the bundle's weights, or the checkpoint's."""
    from torchaudio.pipelines._wav2vec2.utils import _get_model  # the bundle's own architecture builder

    bundle = bundle_of(upstream)
    if not checkpoint:
        try:
            model = bundle.get_model()
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise ConfigError(
                f"cannot download the weights of {upstream} ({type(exc).__name__}): run once where torchaudio can "
                f"reach the internet (they are cached), or give features.checkpoint=/path/to/weights.pt"
            ) from None
        return getattr(model, "model", model).eval()  # without the wrapper large bundles get: we normalise per clip
    saved = read_checkpoint(upstream, checkpoint)
    model = _get_model(bundle._model_type, architecture)
    model.load_state_dict(saved.get("state_dict", saved))
    return model.eval()


def length_batches(lengths: Sequence[int], padded_budget: int) -> list[list[int]]:
    """Indices grouped by similar length, each group padded to at most `padded_budget` in all (one clip at least)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batches and lengths[i] * (len(batches[-1]) + 1) <= padded_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def transformer_layers(encoder: torch.nn.Module, frames: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's output for padded front-end frames (batch, frames, channels), padding masked out of attention.

    torchaudio's `Encoder.extract_features` masks padding for wav2vec2 and HuBERT but refuses a mask for
    WavLM, whose attention takes a key padding mask instead: the layers are run here to give each its own.
    """
    x, attention_mask = encoder._preprocess(frames, lengths)  # projects, zeroes the padded frames
    x = encoder.transformer._preprocess(x)  # adds the convolutional position embedding
    padding = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
    key_padding = torch.zeros(padding.shape, dtype=x.dtype, device=x.device).masked_fill(padding, float("-inf"))
    outputs, position_bias = [], None
    for layer in encoder.transformer.layers:
        if isinstance(layer.attention, WavLMSelfAttention):
            x, position_bias = layer(x, position_bias=position_bias, key_padding_mask=key_padding)
        else:
            x, position_bias = layer(x, attention_mask, position_bias=position_bias)
        outputs.append(x)
    return outputs


class SSLLayers(FeatureSet):
    """Each transformer layer of a frozen upstream, mean-pooled over the whole (trimmed) clip: (layers, dim)."""

    name = "ssl"
    whole_clip = True
    cheap_to_compute = False

    def __init__(
        self,
        spectral: Spectral,
        upstream: str = "WAVLM_BASE_PLUS",
        checkpoint: str | None = None,
        batch_seconds: float = 60.0,
        window: Window | None = None,
    ) -> None:
        super().__init__(spectral, window)
        if self.window.whole_utterance:
            raise ConfigError("features=ssl already pools each whole clip: use features/window=crop")
        bundle = bundle_of(upstream)
        if bundle.sample_rate != self.sample_rate:
            rate = bundle.sample_rate
            raise ConfigError(f"{upstream} takes {rate} Hz audio: set features.spectral.sample_rate={rate}")
        self.upstream, self.checkpoint = upstream, checkpoint
        self.normalize_waveform = bool(bundle._normalize_waveform)
        self.batch_samples = int(batch_seconds * self.sample_rate)
        self.architecture = architecture_of(upstream, checkpoint)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The upstream, loaded at its first use: a run whose clips are all cached never loads it."""
        if self._model is None:
            self._model = load_upstream(self.upstream, self.checkpoint, self.architecture).requires_grad_(False)
            self._model.to(self.device)
        return self._model

    def params(self) -> dict:
        size = {k: self.architecture[k] for k in ("encoder_num_layers", "encoder_embed_dim")}
        return {"name": self.name, "upstream": self.upstream, "checkpoint": self.checkpoint, **size,
                "sample_rate": self.sample_rate, **self._trim_params()}  # fmt: skip

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"ssl": (self.architecture["encoder_num_layers"], self.architecture["encoder_embed_dim"])}

    @torch.no_grad()
    def of_clips(self, waveforms: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each clip's layers, mean-pooled over its frames; on the GPU when there is one.

        The convolutional front end runs one clip at a time (its group norm spans the whole input, so
        padding would change it); the transformer runs on batches of clips of similar length, padded
        to at most `batch_seconds` of audio and masked, so no clip's layers depend on its batch.
        """
        frames = [self._front_end(wave) for wave in waveforms]
        pooled: list[torch.Tensor] = [torch.empty(0)] * len(frames)
        for batch in length_batches([len(wave) for wave in waveforms], self.batch_samples):
            for i, layers in zip(batch, self._pooled_layers([frames[i] for i in batch]), strict=True):
                pooled[i] = layers
        return {"ssl": torch.stack(pooled)}

    def _front_end(self, wave: torch.Tensor) -> torch.Tensor:
        """The feature extractor's frames of one clip: (frames, channels)."""
        wave = wave.to(self.device, torch.float32)[None]
        if self.normalize_waveform:  # what torchaudio's wrapper does for large bundles, here per clip
            wave = torch.nn.functional.layer_norm(wave, wave.shape)
        return self.model.feature_extractor(wave, None)[0][0]

    def _pooled_layers(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """Every transformer layer, mean-pooled over each clip's real frames: (clips, layers, dim), on the CPU."""
        lengths = torch.tensor([len(f) for f in frames], device=self.device)
        padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
        layers = transformer_layers(self.model.encoder, padded, lengths)
        real = (torch.arange(layers[0].shape[1], device=self.device)[None, :] < lengths[:, None]).unsqueeze(-1)
        return torch.stack([(layer * real).sum(dim=1) / lengths[:, None] for layer in layers], dim=1).cpu()

    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.of_clips(list(waveforms))

    def upstream_state(self) -> dict[str, Any]:
        """What rebuilds the upstream anywhere: its architecture parameters and weights."""
        return {"params": self.architecture, "state_dict": self.model.state_dict()}
