"""The trained model as one object, restored from its checkpoint alone: `EmotionRecognizer`.

    audio file, bytes or samples
      -> front end (`emotion.data.frontend.AudioFrontEnd`: decode, duration policy, trim, window, features)
      -> normalize (`emotion.data.normalize.SpeakerNormalizer`: each speaker's clips by their own statistics when
         the model is speaker-adaptive and the speaker has enough clips, else nothing more)
      -> head: standardisation (the training statistics, in the checkpoint) -> network, or a scikit-learn
         estimator (`emotion.models.estimator`, a skops file)
      -> window pooling (the mean of a clip's windows' probabilities)

Training saves with each model the recipe of what it trained (the net's and the features' configs, the front
end's duration limits: `emotion.pipeline.build.inference_recipe`), in a checkpoint's hyperparameters or an
estimator's skops file, so `EmotionRecognizer.from_checkpoint` needs nothing else: no run config, no project
folder. `emotion-predict`, `emotion-evaluate`, the served model (`emotion.serving.pyfunc`) and the benchmarks
all classify through it (`classify_files`, `classify_waves`, or SpeechBrain's `classify_batch(waves,
lengths)`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from emotion.data.features import FeatureSet
from emotion.data.frontend import AudioFrontEnd
from emotion.data.normalize import BY_SPEAKER, SpeakerNormalizer
from emotion.models.estimator import SUFFIX, EstimatorHead
from emotion.models.module import EmotionClassifier
from emotion.serving.model_file import inference_state, read_model_file
from emotion.serving.profiles import ProfileStore, clip_digest, clip_moments

if TYPE_CHECKING:
    import pandas as pd

#: A clip whose RMS level is below this (dB relative to full scale) is reported as silence, not as an emotion.
SILENCE_DBFS = -60.0
#: The `emotion` of a silent clip.
SILENCE = "silence"

@dataclass
class Classification:
    """Class probabilities (clips, classes) of some clips, which of them are silent, and how each was normalised."""

    probabilities: torch.Tensor
    silent: list[bool]
    classes: tuple[str, ...]
    normalization: list[str]

    def frame(self) -> pd.DataFrame:
        """One row per clip: the most probable emotion, its probability, whether the clip is silent, how it was
        normalised (`speaker`, or `population` and why), and every class's probability. A silent clip's emotion is
        `silence`, at confidence 0: there was nothing to judge."""
        import pandas as pd

        probs = self.probabilities.double().numpy()
        emotions = [
            SILENCE if quiet else self.classes[i] for i, quiet in zip(probs.argmax(axis=1), self.silent, strict=True)
        ]
        frame = pd.DataFrame(
            {
                "emotion": emotions,
                "confidence": np.where(self.silent, 0.0, probs.max(axis=1)),
                "silent": self.silent,
                "normalization": self.normalization,
            }
        )
        for index, name in enumerate(self.classes):
            frame[f"prob_{name}"] = probs[:, index]
        return frame


def is_silent(wave: torch.Tensor) -> bool:
    """True for a clip quieter than `SILENCE_DBFS` (its RMS level): nothing to judge an emotion from."""
    rms = float(wave.double().square().mean().sqrt())
    return rms == 0.0 or 20 * np.log10(rms) < SILENCE_DBFS


class Head(Protocol):
    """What follows the front end: inputs in, class probabilities per clip out (windows averaged).

    An `EmotionClassifier` (standardisation and network, restored from a PyTorch checkpoint) or an
    `EstimatorHead` (a scikit-learn estimator, restored from a skops file).
    """

    classes: tuple[str, ...]
    normalizer: SpeakerNormalizer

    def probabilities(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor: ...


class EmotionRecognizer:
    """A trained classifier: waveforms or audio files in, class probabilities out, as its training saw them."""

    def __init__(
        self, head: Head, front_end: AudioFrontEnd, recipe: Mapping[str, Any], version: str | None = None
    ) -> None:
        self.head = head.eval() if isinstance(head, EmotionClassifier) else head
        self.front_end = front_end
        self.recipe = dict(recipe)
        #: The key of this model's speaker profiles: a digest of its parameters and recipe (`model_file.digest`).
        self.version = version

    @classmethod
    def from_checkpoint(cls, path: str | Path, encoder: str | Path | None = None) -> EmotionRecognizer:
        """The model a training checkpoint (`.ckpt`) or an estimator's skops file (`.skops`) holds, read by a schema
        (`emotion.serving.model_file`): nothing in the file is run, resolved or contacted.

        `encoder`: the folder of an encoder carried with the model (`emotion-promote --with-upstream`), read
        instead of the host's copy of the one the recipe names.
        """
        saved = read_model_file(path)
        features = saved.recipe.features.build(Path(encoder) if encoder is not None else None)
        limits = saved.recipe.front_end
        front_end = AudioFrontEnd(features, limits.min_duration, limits.max_duration, trained_model=True)
        return cls(saved.head, front_end, saved.recipe.to_dict(), saved.identity)

    @property
    def file_name(self) -> str:
        """The name `save` gives the model's file in a logged model: `model.ckpt` or `model.skops`."""
        return f"model{SUFFIX}" if isinstance(self.head, EstimatorHead) else "model.ckpt"

    def save(self, path: str | Path) -> None:
        """The file `from_checkpoint` restores: a checkpoint of what inference needs (no optimiser or loss state),
        or the estimator's skops file."""
        if isinstance(self.head, EstimatorHead):
            self.head.save(path, self.recipe)
            return
        state = inference_state(self.head.state_dict())
        torch.save({"state_dict": state, "hyper_parameters": dict(self.head.hparams)}, path)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.head.classes

    @property
    def features(self) -> FeatureSet:
        return self.front_end.features

    @property
    def sample_rate(self) -> int:
        return self.front_end.sample_rate

    def decode(self, source: str | Path | bytes, name: str | None = None) -> torch.Tensor:
        """A file (path, or its bytes) decoded and checked by the model's front end."""
        return self.front_end.decode(source, name)

    def from_samples(self, samples: Sequence[float] | np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Mono samples given at `sample_rate`, checked and resampled by the model's front end."""
        return self.front_end.from_samples(samples, sample_rate)

    @property
    def normalizer(self) -> SpeakerNormalizer:
        """The model's `normalize` stage."""
        return self.head.normalizer

    @property
    def adaptive(self) -> bool:
        """True for a speaker-adaptive model: give the speaker of each clip, and several clips of each."""
        return self.normalizer.adaptive

    @torch.no_grad()
    def classify_waves(
        self,
        waves: Sequence[torch.Tensor],
        speakers: Sequence[str | None] | None = None,
        profiles: ProfileStore | None = None,
        update: bool = True,
    ) -> Classification:
        """Waveforms at the model's sample rate (any lengths), classified by the model's window policy.

        `speakers`: the speaker of each clip (None: unknown). A speaker-adaptive model normalises the clips of each
        speaker with at least `normalizer.min_clips` clips by that speaker's own statistics: those of these clips,
        or, with a `profiles` store, of every clip of theirs it has kept for this model, these included (kept for
        later calls unless `update` is false). The clips of the other speakers are normalised by the training
        population's statistics, and a head with a non-adaptive twin answers for them with it. Other models
        ignore speakers.
        """
        raw = self.front_end.inputs([self.front_end.prepare(wave) for wave in waves])
        speakers = list(speakers) if speakers is not None else [None] * len(waves)
        digests = [clip_digest(wave) for wave in waves] if self.keeps_profiles(profiles) else [""] * len(waves)
        probabilities, ways = self.classify_inputs(raw, speakers, digests, profiles, update)
        return Classification(probabilities, [is_silent(wave) for wave in waves], self.classes, ways)

    def classify_inputs(
        self,
        raw: Mapping[str, torch.Tensor],
        speakers: Sequence[str | None],
        digests: Sequence[str],
        profiles: ProfileStore | None = None,
        update: bool = True,
    ) -> tuple[torch.Tensor, list[str]]:
        """What follows the front end (`classify_waves`): the clips' features normalised and classified; their
        class probabilities and how each was normalised. `digests`: each clip's identity in the profiles."""
        known = None
        if self.keeps_profiles(profiles):
            known = profiles.profiles(self.version, speakers, digests, clip_moments(raw), update)
        inputs, ways = self.normalizer(raw, speakers, profiles=known)
        probabilities = self.head.probabilities(inputs)
        if getattr(self.head, "fallback", None) is not None:
            probabilities, ways = self._answered_by_twin(raw, probabilities, ways)
        return probabilities, ways

    def keeps_profiles(self, profiles: ProfileStore | None) -> bool:
        """True when clips go into `profiles`: a speaker-adaptive model restored from a file (its version)."""
        return profiles is not None and self.adaptive and self.version is not None

    def _answered_by_twin(
        self, raw: Mapping[str, torch.Tensor], probabilities: torch.Tensor, ways: list[str]
    ) -> tuple[torch.Tensor, list[str]]:
        """The probabilities of the clips not normalised by their speaker's statistics replaced by the head's
        non-adaptive twin's (from the features before the stage), and their `normalization` saying so."""
        fell_back = [row for row, way in enumerate(ways) if way != BY_SPEAKER]
        if not fell_back:
            return probabilities, ways
        assert isinstance(self.head, EstimatorHead)
        probabilities = probabilities.clone()
        probabilities[fell_back] = self.head.fallback_probabilities(raw)[fell_back]
        return probabilities, [way if way == BY_SPEAKER else f"{way}: non-adaptive head" for way in ways]

    def classify_batch(
        self, waves: torch.Tensor, lengths: torch.Tensor | None = None, speakers: Sequence[str | None] | None = None
    ) -> Classification:
        """A padded batch (clips, samples) at the model's sample rate; `lengths`: each clip's samples (else all)."""
        if lengths is None:
            return self.classify_waves(list(waves), speakers)
        return self.classify_waves([wave[: int(n)] for wave, n in zip(waves, lengths, strict=True)], speakers)

    def classify_files(
        self, paths: Sequence[str | Path], speakers: Sequence[str | None] | None = None
    ) -> Classification:
        """Audio files (WAV, FLAC, OGG), decoded and checked by the front end; DataError naming a bad one."""
        return self.classify_waves([self.decode(path) for path in paths], speakers)
