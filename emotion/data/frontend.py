"""The audio front end: the one path from a clip to a model's inputs.

    file, bytes or samples
      -> decode (soundfile, mono, resampled to the features' rate; longer than data.max_duration: refused unread)
      -> duration policy (shorter than data.min_duration: refused)
      -> trim (features.window.trim_db: leading and trailing silence)
      -> window (crop: one centre window; utterance: the windows that cover the clip, with `segments`)
      -> features (features=logmel | mfcc | ... | ssl)

The feature cache, the datamodule, evaluation and the served model all call an `AudioFrontEnd`, so what a
model is trained on and what it is served cannot drift apart. What follows is the model's (`EmotionClassifier`):
standardisation with the training statistics kept in its checkpoint, the network, and the mean of the windows'
class probabilities per clip (`EmotionClassifier.clip_log_probabilities`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from emotion.data.audio import MAX_DURATION, check_not_longer, check_sample_rate, load_audio, resample
from emotion.data.augment import WaveAugment
from emotion.data.corpora import BadFilePolicy, Clip
from emotion.data.features import FeatureSet
from emotion.data.windows import covering_windows, stack_windows
from emotion.errors import DataError

log = logging.getLogger(__name__)

#: Why a clip was skipped (`skipped_summary` counts each apart).
UNDECODABLE, TOO_SHORT = "could not be decoded", "shorter than data.min_duration"


class TooShort(DataError):
    """A clip shorter than `data.min_duration`: it decoded, but is too short to judge."""


def skipped_summary(skipped: dict[str, str]) -> str:
    """`skipped 3 clip(s): 2 could not be decoded (a.wav, b.wav); 1 shorter than data.min_duration (c.wav)`."""
    parts = []
    for reason in (UNDECODABLE, TOO_SHORT):
        paths = [Path(path).name for path, why in skipped.items() if why == reason]
        shown = ", ".join(paths[:5]) + (f", and {len(paths) - 5} more" if len(paths) > 5 else "")
        parts += [f"{len(paths)} {reason} ({shown})"] if paths else []
    return f"skipped {len(skipped)} clip(s): {'; '.join(parts)}"


class AudioFrontEnd:
    """Decode, check the duration, trim, window and featurise clips as one run's config says.

    `trained_model`: messages speak of the duration limits the model was trained with (prediction, serving).
    """

    def __init__(
        self,
        features: FeatureSet,
        min_duration: float = 0.0,
        max_duration: float = MAX_DURATION,
        trained_model: bool = False,
    ) -> None:
        self.features = features
        self.min_duration = float(min_duration)
        self.max_duration = float(max_duration)
        self.trained_model = trained_model

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    def decode(self, source: str | Path | bytes, name: str | None = None) -> torch.Tensor:
        """A file (path, or its bytes) decoded and checked for duration.

        DataError naming it if it cannot be decoded or lasts too long (then it is not decoded) or too little.
        """
        wave = load_audio(source, self.sample_rate, max_duration=self.max_duration, name=name)
        self.check_duration(wave, name or str(source))
        return wave

    def from_samples(self, samples: Sequence[float] | np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Mono samples given at `sample_rate`, checked and resampled."""
        try:
            wave = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        except (TypeError, ValueError):
            raise DataError("a waveform must be an array of numbers (mono samples)") from None
        if wave.dim() != 1 or wave.numel() == 0:
            raise DataError(f"a waveform must be a non-empty 1-D array of samples, got shape {tuple(wave.shape)}")
        if not torch.isfinite(wave).all():
            raise DataError("the waveform holds samples that are not finite numbers (NaN or infinity)")
        if sample_rate > 0:  # how long it lasts first: a waveform of an hour is refused as such, whatever its rate
            check_not_longer(wave.numel() / sample_rate, self.max_duration, "the waveform")
        check_sample_rate(sample_rate, "the waveform")
        wave = resample(wave, int(sample_rate), self.sample_rate)
        self.check_duration(wave, "the waveform")
        return wave

    def prepare(self, wave: torch.Tensor) -> torch.Tensor:
        """A decoded clip as the window policy takes it: silence trimmed when `features.window.trim_db` is set."""
        return self.features.prepare(wave)

    def check_duration(self, wave: torch.Tensor, what: str) -> None:
        """DataError if `wave` is shorter than `min_duration` seconds (too short to pad into a window)."""
        seconds = wave.shape[-1] / self.sample_rate
        if seconds >= self.min_duration:
            return
        if self.trained_model:
            bound = f"the data.min_duration={self.min_duration:g} s the model was trained with"
            raise TooShort(f"{what} is {seconds:.3f} s long, shorter than {bound}")
        raise TooShort(f"clip is {seconds:.3f} s long, shorter than data.min_duration={self.min_duration:g} s: {what}")

    def clip(
        self,
        clip: Clip,
        on_bad_file: BadFilePolicy,
        augment: WaveAugment | None = None,
        skipped: dict[str, str] | None = None,
    ) -> torch.Tensor | None:
        """A corpus clip prepared, or None (logged, and its path and reason put in `skipped`) if it is bad and
        `on_bad_file` is skip.

        An augmented copy (`clip.copy` > 0) is passed through `augment` with a random stream fixed by (clip, copy),
        so a cached copy is the one a rerun would make.
        """
        try:
            wave = self.prepare(self.decode(clip.path))
        except DataError as exc:
            if on_bad_file == "error":
                raise
            log.warning("skipping clip: %s", exc)
            if skipped is not None:
                skipped[clip.path] = TOO_SHORT if isinstance(exc, TooShort) else UNDECODABLE
            return None
        if clip.copy and augment is not None:
            wave = augment(wave, augment.rng_for(clip.path, clip.copy))
        return wave

    def clips(
        self, clips: Sequence[Clip], on_bad_file: BadFilePolicy
    ) -> tuple[list[Clip], list[torch.Tensor], list[str]]:
        """The clips that decode, their prepared waveforms (whole, any length), and the paths of those skipped."""
        kept: list[Clip] = []
        waves: list[torch.Tensor] = []
        skipped: dict[str, str] = {}
        for clip in tqdm(clips, desc="Decoding whole clips", unit="clip"):
            wave = self.clip(clip, on_bad_file, skipped=skipped)
            if wave is not None:
                kept.append(clip)
                waves.append(wave)
        if skipped:
            log.warning("%s", skipped_summary(skipped))
        return kept, waves, list(skipped)

    def windows(self, wave: torch.Tensor) -> torch.Tensor:
        """The windows (count, n_samples) of a prepared clip that the utterance policy evaluates it by."""
        return covering_windows(wave, self.features.n_samples, self.features.window.hop)

    def inputs(self, waves: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """A model's inputs for prepared clips (`prepare`): one row per clip (crop policy), or one per window of
        each clip with `segments`, each window's clip (utterance policy), for
        `EmotionClassifier.clip_log_probabilities`."""
        if not self.features.window.whole_utterance:
            return self.features.of_clips(waves)
        windows, segments = stack_windows([self.windows(wave) for wave in waves])
        return self.features(windows) | {"segments": segments}
