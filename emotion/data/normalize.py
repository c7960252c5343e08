"""Normalisation of features: by the training population's statistics, or by each speaker's own.

    features -> SpeakerNormalizer (`normalize` config group) -> head (its Standardizer, then the network;
                                                                   or a scikit-learn pipeline)

`normalize=population` (the default) leaves the features to the head, which standardises them with the
training partition's statistics. `normalize=speaker` first standardises each speaker's clips by that speaker's
own statistics (mean and std, or the mean only with `scale=mean`), taken from all that speaker's clips and never
from labels: a speaker the model never heard needs only some unlabeled clips of theirs. A speaker's statistics
are their clips' `Moments` (sums, which add up across requests: `emotion.serving.profiles`), shrunk toward the
training population's by `shrinkage` clips' worth: with n clips, a weight n / (n + shrinkage) on the speaker's
own. In training, a speaker with fewer than `min_clips` clips (or none named) is standardised by the training
population's statistics instead, which the normaliser keeps with the trained model. A trained model blends its
answer for a speaker of n clips with its non-adaptive one (a scikit-learn head's twin: `emotion.models.estimator`)
by `weight(n)` (`emotion.serving.recognizer`): the `blend_curve` a scikit-learn head learned from its training
speakers' own k-clip curves (`learn_blend`: `emotion.pipeline.blend`), never above the rule of a model without
one, (n / min_clips)^2 up to 1. Training, validation and test clips, and those `emotion-predict`, the served
model and `emotion-evaluate` classify, all go through the same stage (the datamodule applies it to the cached
features, the recognizer to a request's).
`normalize=none`: no standardisation at all.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from emotion.data.blending import BlendCurve, checked_curve, curve_weight
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


@dataclass
class Moments:
    """What a speaker's statistics are made of, summed over some of their clips: how many clips, and per input the
    number of values summed into each (channel, frequency) row (clips x frames), their sums and sums of squares.

    Sums add up (`+`), so a speaker's statistics can grow one request at a time and be stored between them.
    """

    clips: int
    count: dict[str, float]
    sum: dict[str, torch.Tensor]
    sumsq: dict[str, torch.Tensor]

    @classmethod
    def of(cls, inputs: Mapping[str, torch.Tensor], rows: Sequence[int]) -> Moments:
        """The moments of `rows` of every input."""
        index = torch.tensor(list(rows), dtype=torch.long)
        count, sums, squares = {}, {}, {}
        for name, x in inputs.items():
            picked = x[index].double()
            dims = [0, *range(3, x.dim())]
            sums[name] = picked.sum(dim=dims, keepdim=True)[0]
            squares[name] = picked.square().sum(dim=dims, keepdim=True)[0]
            count[name] = float(picked.numel() / sums[name].numel())
        return cls(len(index), count, sums, squares)

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.clips + other.clips,
            {name: self.count[name] + other.count[name] for name in self.count},
            {name: self.sum[name] + other.sum[name] for name in self.sum},
            {name: self.sumsq[name] + other.sumsq[name] for name in self.sumsq},
        )

    def mean_var(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (population) variance of one input's rows."""
        mean = self.sum[name] / self.count[name]
        return mean, (self.sumsq[name] / self.count[name] - mean.square()).clamp_min(0.0)

    def to_bytes(self) -> bytes:
        """The moments as an .npz file's bytes (numbers only: read back without unpickling anything)."""
        arrays = {"clips": np.array(self.clips)}
        for name in self.sum:
            arrays |= {
                f"count/{name}": np.array(self.count[name]),
                f"sum/{name}": self.sum[name].numpy(),
                f"sumsq/{name}": self.sumsq[name].numpy(),
            }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Moments:
        """The moments `to_bytes` wrote."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            names = [key.split("/", 1)[1] for key in arrays.files if key.startswith("sum/")]
            return cls(
                int(arrays["clips"]),
                {name: float(arrays[f"count/{name}"]) for name in names},
                {name: torch.from_numpy(arrays[f"sum/{name}"]) for name in names},
                {name: torch.from_numpy(arrays[f"sumsq/{name}"]) for name in names},
            )


def saved_settings(settings: Mapping[str, object]) -> dict[str, object]:
    """A trained model's `normalize` settings (its recipe's); one saved before shrinkage existed keeps none."""
    settings = dict(settings)
    if settings.get("mode") == "speaker":
        settings.setdefault("shrinkage", 0.0)
    return settings


class SpeakerNormalizer(nn.Module):
    """The `normalize` stage: each speaker's clips by their own statistics, or nothing (the head standardises).

    `fit` keeps the training population's statistics: what a speaker's own are shrunk toward (by `shrinkage`
    clips' worth), and the fallback for a speaker with under `min_clips` clips (in training; a served model
    blends by `weight`).
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        mode: Mode = "population",
        scale: Scale = "mean_var",
        min_clips: int = 10,
        shrinkage: float = 2.0,
        learn_blend: bool = False,
        blend_curve: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"normalize.mode={mode}: choose one of {list(MODES)}")
        if scale not in SCALES:
            raise ConfigError(f"normalize.scale={scale}: choose one of {list(SCALES)}")
        if min_clips < 1:
            raise ConfigError(f"normalize.min_clips={min_clips}: a speaker's statistics need 1 clip at least")
        if shrinkage < 0 or (shrinkage == 0 and min_clips < 2):
            raise ConfigError(
                f"normalize.shrinkage={shrinkage}: give 0 or more clips' worth (and min_clips 2 or more with 0)"
            )
        self.mode, self.scale, self.min_clips, self.shrinkage = mode, scale, int(min_clips), float(shrinkage)
        #: Whether a scikit-learn head learns `blend_curve` in training (`emotion.pipeline.blend`).
        self.learn_blend = bool(learn_blend)
        self.blend_curve: BlendCurve | None = checked_curve(blend_curve)
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
        profiles: Mapping[str, Moments] | None = None,
        min_clips: int | None = None,
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The inputs normalised, and how each clip was: `speaker`, or `population` (with why, when adaptive).

        `speakers`: each clip's speaker, None where unknown. A speaker's statistics are those of their clips among
        `inputs` (those `reference` marks, when given: the original clips, not their augmented copies), or their
        `profiles` when given (moments that already hold these clips: `emotion.serving.profiles`); labels never
        enter. `min_clips`: the fewest clips a speaker's own statistics need here (default: the stage's; a served
        model takes 1, and blends by `weight`).
        """
        if not self.adaptive:  # (windowed inputs have a row per window: `speakers` says how many clips)
            return dict(inputs), [BY_POPULATION] * len(speakers)
        if profiles is None:
            profiles = self.profiles(inputs, speakers, reference)
        least = self.min_clips if min_clips is None else min_clips
        statistics = {
            speaker: self.statistics(moments) for speaker, moments in profiles.items() if moments.clips >= least
        }
        normalized = {name: x.clone().float() for name, x in inputs.items()}
        ways: list[str] = []
        for row, speaker in enumerate(speakers):
            if speaker in statistics:
                for name, (mean, std) in statistics[speaker].items():
                    normalized[name][row] = self.standardize(inputs[name][row], mean, std)
                ways.append(BY_SPEAKER)
                continue
            for name in normalized:
                normalized[name][row] = self._by_population(name, inputs[name][row])
            ways.append(self._fallback_reason(speaker, profiles[speaker].clips if speaker in profiles else 0))
        return normalized, ways

    def weight(self, clips: int) -> float:
        """How much a speaker-adaptive answer weighs against the non-adaptive one for a speaker of `clips` clips
        when served: the `blend_curve` interpolated linearly in n between its points (its first point's weight
        below it, its last's past it; 0 with no clip), else (n / min_clips)^2 up to 1 (`benchmarks/speaker_clips.py`
        measures both: docs/speakers.md)."""
        if self.blend_curve is None:
            return min(1.0, clips / self.min_clips) ** 2
        return curve_weight(self.blend_curve, clips)

    def by_population(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every clip normalised by the training population's statistics (a speaker-adaptive network's
        non-adaptive answer)."""
        return {name: self._by_population(name, x.float()) for name, x in inputs.items()}

    def _by_population(self, name: str, x: torch.Tensor) -> torch.Tensor:
        mean = getattr(self.population, f"{name}_mean")
        return self.standardize(x, mean, getattr(self.population, f"{name}_std"))

    @staticmethod
    def profiles(
        inputs: Mapping[str, torch.Tensor], speakers: Sequence[str | None], reference: Sequence[bool] | None = None
    ) -> dict[str, Moments]:
        """Each named speaker's moments, from their own rows (those `reference` marks, when given)."""
        rows: dict[str, list[int]] = {}
        for row, speaker in enumerate(speakers):
            if speaker is not None and (reference is None or reference[row]):
                rows.setdefault(speaker, []).append(row)
        return {speaker: Moments.of(inputs, own) for speaker, own in rows.items()}

    def statistics(self, moments: Moments) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """A speaker's mean and std of each input: their own, shrunk toward the training population's."""
        assert self.population is not None
        weight = moments.clips / (moments.clips + self.shrinkage)
        statistics = {}
        for name in moments.sum:
            mean, var = moments.mean_var(name)
            population_mean = getattr(self.population, f"{name}_mean").double()
            population_var = getattr(self.population, f"{name}_std").double().square()
            shrunk_mean = weight * mean + (1 - weight) * population_mean
            shrunk_var = weight * var + (1 - weight) * population_var
            statistics[name] = (shrunk_mean.float(), shrunk_var.sqrt().clamp_min(1e-5).float())
        return statistics

    def standardize(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """`x` standardised by a mean and std (centred only with `scale=mean`)."""
        return (x - mean) / std if self.scale == "mean_var" else x - mean

    def _fallback_reason(self, speaker: str | None, clips: int) -> str:
        if speaker is None:
            return f"{BY_POPULATION} (no speaker given)"
        return f"{BY_POPULATION} ({clips} clip(s) of {speaker}, fewer than {self.min_clips})"
