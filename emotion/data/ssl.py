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
    """The frozen upstream in eval mode: the bundle's downloaded weights, or the checkpoint's."""
    from torchaudio.pipelines._wav2vec2.utils import _get_model  # the bundle's own architecture builder

    bundle = bundle_of(upstream)
    if not checkpoint:
        try:
            return bundle.get_model().eval()
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise ConfigError(
                f"cannot download the weights of {upstream} ({type(exc).__name__}): run once where torchaudio can "
                f"reach the internet (they are cached), or give features.checkpoint=/path/to/weights.pt"
            ) from None
    saved = read_checkpoint(upstream, checkpoint)
    model = _get_model(bundle._model_type, architecture)
    model.load_state_dict(saved.get("state_dict", saved))
    return model.eval()


class SSLLayers(FeatureSet):
    """Each transformer layer of a frozen upstream, mean-pooled over the whole (trimmed) clip: (layers, dim)."""

    name = "ssl"
    whole_clip = True

    def __init__(
        self,
        spectral: Spectral,
        upstream: str = "WAVLM_BASE_PLUS",
        checkpoint: str | None = None,
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
        """One clip at a time, on the GPU when there is one: no padding changes what a clip's layers say."""
        pooled = []
        for wave in waveforms:
            layers, _ = self.model.extract_features(wave.to(self.device, torch.float32)[None])
            pooled.append(torch.stack([layer[0].mean(dim=0) for layer in layers]).cpu())
        return {"ssl": torch.stack(pooled)}

    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.of_clips(list(waveforms))

    def upstream_state(self) -> dict[str, Any]:
        """What rebuilds the upstream anywhere: its architecture parameters and weights."""
        return {"params": self.architecture, "state_dict": self.model.state_dict()}
