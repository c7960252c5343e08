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
from emotion.data.normalize import BY_POPULATION, BY_SPEAKER, SpeakerNormalizer
from emotion.models.estimator import SUFFIX, EstimatorHead
from emotion.models.module import EmotionClassifier
from emotion.serving.enrolment import ClipsOfRequest, enrolled_profiles
from emotion.serving.model_file import inference_state, read_model_file
from emotion.serving.profiles import ProfileStore

if TYPE_CHECKING:
    import pandas as pd

#: A clip whose RMS level is below this (dB relative to full scale) is reported as silence, not as an emotion.
SILENCE_DBFS = -60.0
#: The `emotion` of a silent clip.
SILENCE = "silence"
#: How a speaker-adaptive model answered, besides `speaker` (its speaker's own statistics, fully).
BLENDED = "speaker, blended with the non-adaptive answer (few clips)"
NO_SPEAKER = "population (no speaker given)"
NO_PROFILE = "population (too few clips of this speaker yet)"


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


def clips_in(raw: Mapping[str, torch.Tensor]) -> int:
    """How many clips a front end's output holds (windowed clips: a row a window, `segments` saying whose)."""
    if "segments" in raw:
        return int(raw["segments"].max()) + 1
    return len(next(iter(raw.values())))


def way_of(speaker: str | None, weight: float) -> str:
    """How a speaker-adaptive model answered a clip (the `normalization` column), naming no count or name."""
    if weight >= 1:
        return BY_SPEAKER
    if weight > 0:
        return BLENDED
    return NO_SPEAKER if speaker is None else NO_PROFILE


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
        update: bool | Sequence[bool] = True,
    ) -> Classification:
        """Waveforms at the model's sample rate (any lengths), classified by the model's window policy.

        `speakers`: the speaker of each clip (None: unknown). A speaker-adaptive model normalises each speaker's
        clips by that speaker's own statistics: those of these clips, or, with a `profiles` store, of the clips
        of theirs it keeps for this model and these (kept for later calls where `update`, per clip or for all, is
        true, and only those `emotion.serving.enrolment` admits). Its answer for a speaker with n clips blends
        the adaptive answer and the non-adaptive one by `normalizer.weight(n)` ((n / min_clips)^2, up to 1); for a
        clip of no speaker, the non-adaptive answer alone. Other models ignore speakers.
        """
        raw = self.front_end.inputs([self.front_end.prepare(wave) for wave in waves])
        silent = [is_silent(wave) for wave in waves]
        probabilities, ways = self.classify_inputs(raw, speakers, profiles, update, waves, silent)
        return Classification(probabilities, silent, self.classes, ways)

    def classify_inputs(
        self,
        raw: Mapping[str, torch.Tensor],
        speakers: Sequence[str | None] | None = None,
        profiles: ProfileStore | None = None,
        update: bool | Sequence[bool] = True,
        waves: Sequence[torch.Tensor] | None = None,
        silent: Sequence[bool] | None = None,
    ) -> tuple[torch.Tensor, list[str]]:
        """What follows the front end (`classify_waves`): the clips' features (one clip a row) normalised and
        classified; their class probabilities and how each was normalised. Without `waves`, a clip is identified
        in the profiles by its features."""
        count = len(speakers) if speakers is not None else clips_in(raw)
        speakers = list(speakers) if speakers is not None else [None] * count
        if not self.adaptive:
            return self.head.probabilities(dict(raw)), [BY_POPULATION] * count
        if self.keeps_profiles(profiles):
            updates = [update] * count if isinstance(update, bool) else list(update)
            clips = ClipsOfRequest(raw, speakers, waves, silent)
            known = enrolled_profiles(self.normalizer, profiles, self.version, clips, updates)
        else:  # these clips' own statistics
            known = self.normalizer.profiles(raw, speakers)
        inputs, _ = self.normalizer(raw, speakers, profiles=known, min_clips=1)
        clips_of = [known[speaker].clips if speaker in known else 0 for speaker in speakers]
        weights = torch.tensor([self.normalizer.weight(n) for n in clips_of]).unsqueeze(1)
        adaptive = self.head.probabilities(inputs)
        if bool((weights == 1).all()):
            return adaptive, [BY_SPEAKER] * count
        blended = weights * adaptive + (1 - weights) * self.non_adaptive_probabilities(raw)
        return blended, [way_of(speaker, float(w)) for speaker, w in zip(speakers, weights, strict=True)]

    def non_adaptive_probabilities(self, raw: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A speaker-adaptive model's answer without the speaker: its head's non-adaptive twin's (a scikit-learn
        head), or its network's on the training population's statistics."""
        if getattr(self.head, "fallback", None) is not None:
            return self.head.fallback_probabilities(raw)
        return self.head.probabilities(self.normalizer.by_population(raw))

    def keeps_profiles(self, profiles: ProfileStore | None) -> bool:
        """True when clips go into `profiles`: a speaker-adaptive model restored from a file (its version)."""
        return profiles is not None and self.adaptive and self.version is not None

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
