"""From audio to emotion with a trained run: its config and weights, and the same preprocessing as training.

A `Predictor` rebuilds the feature set and the network from a run's resolved
`config.yaml`, loads the weights (safely, `weights_only=True`) and classifies
waveforms exactly as the training pipeline saw them: decoded with soundfile,
resampled, trimmed if the run trimmed silence, then cut by the run's window
policy (`features.window`: one centre window, or the average over windows that
cover the whole clip), featurised, standardised with the training statistics
kept in the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF
import yaml
from hydra.utils import instantiate

from emotion.data.audio import MAX_DURATION, check_not_longer, load_audio
from emotion.data.features import FeatureSet
from emotion.data.windows import average_over_windows, covering_windows, stack_windows
from emotion.encoders import saved_encoder_overrides
from emotion.errors import DataError
from emotion.models.module import EmotionClassifier
from emotion.tracking.checkpoints import load_state

#: A clip whose RMS level is below this (dB relative to full scale) is reported as silence, not as an emotion.
SILENCE_DBFS = -60.0

#: The parts of an EmotionClassifier's state that inference needs (not the loss weights or optimiser).
INFERENCE_PREFIXES = ("model.", "standardizer.")


def inference_state(checkpoint_path: str | Path) -> dict[str, torch.Tensor]:
    """The network and standardisation weights of a Lightning checkpoint, loaded safely."""
    return load_state(checkpoint_path, INFERENCE_PREFIXES)


def _inference_model_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model config with no weight loading of its own: every weight comes from the run's checkpoint.

    (A stacked fusion would otherwise fetch its branch checkpoints from MLflow again.)
    """
    config = dict(model)
    if config.get("mode") == "stacked":
        config |= {"mode": "end_to_end", "branch_checkpoints": None}
    return config


class Predictor:
    """A trained classifier that takes waveforms (or audio files) and returns class probabilities."""

    def __init__(self, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> None:
        self.classes: tuple[str, ...] = tuple(config["data"]["classes"])
        self.features: FeatureSet = instantiate(config["features"])
        shapes = self.features.shapes()
        network = instantiate(_inference_model_config(config["model"]))(
            input_shapes=shapes, num_classes=len(self.classes)
        )
        self.module = EmotionClassifier(network, self.classes, input_shapes=shapes)
        self.module.load_state_dict(dict(state))  # strict: every tensor of the network and the standardiser
        self.module.eval()
        #: Clips shorter than this (seconds) were refused in training, and are refused here too.
        self.min_duration = float(config["data"].get("min_duration", 0.0))
        #: Clips longer than this (seconds) are refused before they are decoded or resampled.
        self.max_duration = float(config["data"].get("max_duration", MAX_DURATION))

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
        return self.features.sample_rate

    def load(self, source: str | Path | bytes, name: str | None = None) -> torch.Tensor:
        """A file (path, or its bytes) decoded to mono at the model's sample rate.

        DataError naming it if it cannot be decoded, or if it lasts less than the training's `data.min_duration`
        or more than its `data.max_duration` (then it is not decoded).
        """
        name = name or str(source)
        wave = load_audio(source, self.sample_rate, max_duration=self.max_duration, name=name)
        self.check_duration(wave, name)
        return wave

    def check_duration(self, wave: torch.Tensor, what: str) -> None:
        """DataError if `wave` is shorter than the `data.min_duration` the model was trained with."""
        seconds = wave.shape[-1] / self.sample_rate
        if seconds < self.min_duration:
            raise DataError(
                f"{what} is {seconds:.3f} s long, shorter than the data.min_duration={self.min_duration} s "
                "the model was trained with"
            )

    def resample(self, waveform: Sequence[float] | np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """A mono waveform given at `sample_rate`, at the model's sample rate."""
        try:
            wave = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
        except (TypeError, ValueError):
            raise DataError("a waveform must be an array of numbers (mono samples)") from None
        if wave.dim() != 1 or wave.numel() == 0:
            raise DataError(f"a waveform must be a non-empty 1-D array of samples, got shape {tuple(wave.shape)}")
        if not torch.isfinite(wave).all():
            raise DataError("the waveform holds samples that are not finite numbers (NaN or infinity)")
        if sample_rate <= 0:
            raise DataError(f"sample rate must be positive, got {sample_rate}")
        check_not_longer(wave.numel() / sample_rate, self.max_duration, "the waveform")
        wave = AF.resample(wave, int(sample_rate), self.sample_rate) if sample_rate != self.sample_rate else wave
        self.check_duration(wave, "the waveform")
        return wave

    @staticmethod
    def is_silent(wave: torch.Tensor) -> bool:
        """True for a clip quieter than `SILENCE_DBFS` (its RMS level): nothing to judge an emotion from."""
        rms = float(wave.double().square().mean().sqrt())
        return rms == 0.0 or 20 * np.log10(rms) < SILENCE_DBFS

    @torch.no_grad()
    def predict_proba(self, waveforms: Sequence[torch.Tensor]) -> torch.Tensor:
        """Probabilities (clips, classes) of waveforms at the model's sample rate, by the run's window policy."""
        clips = [self.features.prepare(w) for w in waveforms]
        if not self.features.window.whole_utterance:
            return self.module(self.features.of_clips(clips)).softmax(dim=1)
        n_samples, hop = self.features.n_samples, self.features.window.hop
        waveforms, segments = stack_windows([covering_windows(clip, n_samples, hop) for clip in clips])
        probabilities = self.module(self.features(waveforms)).softmax(dim=1)
        return average_over_windows(probabilities, segments, len(clips))
