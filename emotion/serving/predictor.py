"""From audio to emotion with a trained run: its config and weights, and the same preprocessing as training.

A `Predictor` rebuilds the feature set and the network from a run's resolved
`config.yaml`, loads the weights (safely, `weights_only=True`) and classifies
waveforms through the training's own front end (`emotion.data.frontend`) and
model: decoded, checked for duration, trimmed, windowed and featurised as the
run's config says, standardised with the training statistics kept in the
weights, and averaged over windows by `EmotionClassifier.clip_logits`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra.utils import instantiate

from emotion.data.audio import MAX_DURATION
from emotion.data.features import FeatureSet
from emotion.data.frontend import AudioFrontEnd
from emotion.encoders import saved_encoder_overrides
from emotion.models.module import EmotionClassifier
from emotion.models.weights import NETWORK_PREFIX, load_state

#: A clip whose RMS level is below this (dB relative to full scale) is reported as silence, not as an emotion.
SILENCE_DBFS = -60.0

#: The parts of an EmotionClassifier's state that inference needs (not the loss weights or optimiser).
INFERENCE_PREFIXES = (NETWORK_PREFIX, "standardizer.")


def inference_state(checkpoint_path: str | Path) -> dict[str, torch.Tensor]:
    """The network and standardisation weights of a Lightning checkpoint, loaded safely."""
    return load_state(checkpoint_path, INFERENCE_PREFIXES)


def inference_net_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """The `net` of a run's `model` config, with no weight loading of its own: every weight comes from the run's
    checkpoint (a stacked fusion would otherwise read its branch checkpoints again).

    Models logged before the `model` group held the LightningModule have the net's config as `model` itself.
    """
    config = dict(model.get("net", model))
    if config.get("mode") == "stacked":
        config |= {"mode": "end_to_end", "branch_checkpoints": None}
    return config


class Predictor:
    """A trained classifier that takes waveforms (or audio files) and returns class probabilities."""

    def __init__(self, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> None:
        self.classes: tuple[str, ...] = tuple(config["data"]["classes"])
        self.features: FeatureSet = instantiate(config["features"])
        net = instantiate(inference_net_config(config["model"]))
        self.module = EmotionClassifier(net, self.classes, input_shapes=self.features.shapes())
        self.module.load_state_dict(dict(state))  # strict: every tensor of the network and the standardiser
        self.module.eval()
        data = config["data"]
        self.front_end = AudioFrontEnd(
            self.features, data.get("min_duration", 0.0), data.get("max_duration", MAX_DURATION), trained_model=True
        )

    @classmethod
    def from_files(
        cls, config_path: str | Path, weights_path: str | Path, upstream_path: str | Path | None = None
    ) -> Predictor:
        """A predictor from a run's `config.yaml` and a weights file written by `torch.save(state_dict)`.

        `upstream_path`: the folder of an encoder carried with the model, used instead of the config's.
        """
        config = yaml.safe_load(Path(config_path).read_text())
        if upstream_path is not None:
            config["features"] |= saved_encoder_overrides(upstream_path)
        return cls(config, torch.load(weights_path, map_location="cpu", weights_only=True))

    @property
    def sample_rate(self) -> int:
        return self.front_end.sample_rate

    def load(self, source: str | Path | bytes, name: str | None = None) -> torch.Tensor:
        """A file (path, or its bytes) decoded and checked by the run's front end (`emotion.data.frontend`)."""
        return self.front_end.decode(source, name)

    def resample(self, waveform: Sequence[float] | np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Mono samples given at `sample_rate`, checked and resampled by the run's front end."""
        return self.front_end.from_samples(waveform, sample_rate)

    @staticmethod
    def is_silent(wave: torch.Tensor) -> bool:
        """True for a clip quieter than `SILENCE_DBFS` (its RMS level): nothing to judge an emotion from."""
        rms = float(wave.double().square().mean().sqrt())
        return rms == 0.0 or 20 * np.log10(rms) < SILENCE_DBFS

    @torch.no_grad()
    def predict_proba(self, waveforms: Sequence[torch.Tensor]) -> torch.Tensor:
        """Probabilities (clips, classes) of waveforms at the model's sample rate, by the run's window policy."""
        inputs = self.front_end.inputs([self.front_end.prepare(wave) for wave in waveforms])
        return self.module.clip_logits(inputs).softmax(dim=1)
