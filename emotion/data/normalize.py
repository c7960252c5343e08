"""Normalisation of features: by the training population's statistics, or by each speaker's own.

    features -> SpeakerNormalizer (`normalize` config group) -> head (its Standardizer, then the network;
                                                                   or a scikit-learn pipeline)

`normalize=population` (the default) leaves the features to the head, which standardises them with the
training partition's statistics. `normalize=speaker` first standardises each speaker's clips by that speaker's
own statistics (mean and std, or the mean only with `scale=mean`), taken from that speaker's clips alone and
never from labels: a speaker the model never heard needs only some unlabeled clips of theirs. A speaker with
fewer than `min_clips` clips (or none named) is standardised by the training population's statistics instead,
which the normaliser keeps with the trained model. Training, validation and test clips all go through the same
stage (the datamodule applies it to the cached features), and so do the clips `emotion-predict`, the served
model and `emotion-evaluate` classify (`emotion.serving.recognizer`). `normalize=none`: no standardisation at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from emotion.errors import ConfigError

Mode = Literal["none", "population", "speaker"]
Scale = Literal["mean_var", "mean"]
MODES = ("none", "population", "speaker")
SCALES = ("mean_var", "mean")
#: How a clip was normalised, as the predictions' `normalization` column says it.
BY_SPEAKER = "speaker"
BY_POPULATION = "population"


def feature_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of a batch of one input over its examples and time, per (channel, frequency) row.

    For (examples, layers, width) inputs, per layer and dimension; for (examples, channels, bins, frames), per
    channel and bin. The std is at least 1e-5 (a constant row is left centred, not blown up).
    """
    dims = [0, *range(3, x.dim())]
    x = x.double()
    return x.mean(dim=dims, keepdim=True)[0].float(), x.std(dim=dims, keepdim=True)[0].clamp_min(1e-5).float()


class Standardizer(nn.Module):
    """Per-row standardisation of each input with fitted statistics (buffers: kept in the checkpoint)."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.names = tuple(shapes)
        for name, shape in shapes.items():
            stats_shape = (shape[0], shape[1], *([1] * (len(shape) - 2)))
            self.register_buffer(f"{name}_mean", torch.zeros(stats_shape))
            self.register_buffer(f"{name}_std", torch.ones(stats_shape))

    @torch.no_grad()
    def fit(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Set the statistics from a (training) batch of every input: mean and std over examples and time."""
        for name in self.names:
            mean, std = feature_statistics(inputs[name])
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std") for name, x in inputs.items()}


class SpeakerNormalizer(nn.Module):
    """The `normalize` stage: each speaker's clips by their own statistics, or nothing (the head standardises).

    `fit` keeps the training population's statistics: the fallback for a speaker with under `min_clips` clips.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        mode: Mode = "population",
        scale: Scale = "mean_var",
        min_clips: int = 3,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"normalize.mode={mode}: choose one of {list(MODES)}")
        if scale not in SCALES:
            raise ConfigError(f"normalize.scale={scale}: choose one of {list(SCALES)}")
        if min_clips < 2:
            raise ConfigError(f"normalize.min_clips={min_clips}: a speaker's statistics need 2 clips at least")
        self.mode, self.scale, self.min_clips = mode, scale, int(min_clips)
        # Population statistics only where they are used: models of the other modes keep their checkpoints' keys.
        self.population = Standardizer(shapes) if self.adaptive else None

    @property
    def adaptive(self) -> bool:
        """True when each speaker's clips are normalised by that speaker's own statistics."""
        return self.mode == "speaker"

    @torch.no_grad()
    def fit(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Keep the training population's statistics (clean training clips), the fallback of small speakers."""
        if self.population is not None:
            self.population.fit(inputs)

    @torch.no_grad()
    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        speakers: Sequence[str | None],
        reference: Sequence[bool] | None = None,
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The inputs normalised, and how each clip was: `speaker`, or `population` (with why, when adaptive).

        `speakers`: each clip's speaker, None where unknown. A speaker's statistics are those of their clips among
        `inputs` (those `reference` marks, when given: the original clips, not their augmented copies); labels
        never enter.
        """
        if not self.adaptive:  # (windowed inputs have a row per window: `speakers` says how many clips)
            return dict(inputs), [BY_POPULATION] * len(speakers)
        counted = [s if reference is None or reference[row] else None for row, s in enumerate(speakers)]
        clips_of = Counter(counted)
        statistics = self.speaker_statistics(inputs, counted)
        normalized = {name: x.clone().float() for name, x in inputs.items()}
        ways: list[str] = []
        for row, speaker in enumerate(speakers):
            if speaker in statistics:
                for name, (mean, std) in statistics[speaker].items():
                    normalized[name][row] = self._standardize(inputs[name][row], mean, std)
                ways.append(BY_SPEAKER)
                continue
            for name in normalized:
                mean = getattr(self.population, f"{name}_mean")
                std = getattr(self.population, f"{name}_std")
                normalized[name][row] = self._standardize(inputs[name][row], mean, std)
            ways.append(self._fallback_reason(speaker, clips_of[speaker]))
        return normalized, ways

    def speaker_statistics(
        self, inputs: Mapping[str, torch.Tensor], speakers: Sequence[str | None]
    ) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Each named speaker's statistics of each input, from their own rows; only speakers with `min_clips`."""
        rows: dict[str, list[int]] = {}
        for row, speaker in enumerate(speakers):
            if speaker is not None:
                rows.setdefault(speaker, []).append(row)
        return {
            speaker: {name: feature_statistics(x[torch.tensor(own)]) for name, x in inputs.items()}
            for speaker, own in rows.items()
            if len(own) >= self.min_clips
        }

    def _standardize(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return (x - mean) / std if self.scale == "mean_var" else x - mean

    def _fallback_reason(self, speaker: str | None, clips: int) -> str:
        if speaker is None:
            return f"{BY_POPULATION} (no speaker given)"
        return f"{BY_POPULATION} ({clips} clip(s) of {speaker}, fewer than {self.min_clips})"
