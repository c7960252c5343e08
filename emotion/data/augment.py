"""Augmentation of training data: waveform transforms and SpecAugment masks (torchaudio).

`WaveAugment` draws, for each clip, a random chain of a fragment of the clip,
pauses around it, speed perturbation, pitch shift, time shift, gain and additive
noise (white, pink, or recordings from a noise folder) at an SNR drawn from a
range. Fragments and pauses show a head what a recording's speech detector cuts
(pieces of a sentence, speech with some of the pause around it). `SpecAugment`
masks random frequency rows and time columns of feature batches. The datamodule
applies both to the training partition only, after splitting (unless the
report's leaky protocol is asked for explicitly).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from emotion.data.audio import fit_length, load_audio
from emotion.data.corpora.base import AUDIO_SUFFIXES, Clip
from emotion.errors import ConfigError


@dataclass(frozen=True)
class NoiseOptions:
    """Additive noise at an SNR drawn uniformly from `snr_db`; `kind` white, pink or files (from `folder`)."""

    snr_db: tuple[float, float] = (10.0, 30.0)
    kind: str = "white"
    folder: str | None = None
    p: float = 1.0


class WaveAugment:
    """A random chain of waveform transforms; each option left as None is off."""

    def __init__(
        self,
        sample_rate: int,
        noise: dict | None = None,
        gain_db: Sequence[float] | None = None,
        shift: float | None = None,
        speed: Sequence[float] | None = None,
        pitch_semitones: Sequence[float] | None = None,
        fragment: Sequence[float] | None = None,
        pause: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        self.sample_rate = sample_rate
        self.fragment = _fraction_range(fragment)
        self.pause = _seconds_range(pause)
        self.noise = _noise_options(noise)
        self.gain_db = tuple(gain_db) if gain_db is not None else None
        self.shift = shift
        self.speed = tuple(speed) if speed is not None else None
        self.pitch_semitones = tuple(pitch_semitones) if pitch_semitones is not None else None
        self.seed = seed
        self._noise_files = self._find_noise_files()

    def params(self) -> dict:
        return {
            "noise": asdict(self.noise) if self.noise else None,
            "gain_db": self.gain_db,
            "shift": self.shift,
            "speed": self.speed,
            "pitch_semitones": self.pitch_semitones,
            **({"fragment": self.fragment} if self.fragment is not None else {}),
            **({"pause": self.pause} if self.pause is not None else {}),
            "seed": self.seed,
        }

    def key(self) -> str:
        """Identity of these settings, part of the cache key of augmented copies."""
        return hashlib.sha1(json.dumps(self.params(), sort_keys=True).encode()).hexdigest()[:12]

    def rng_for(self, path: str, copy: int) -> np.random.Generator:
        """The random stream of one augmented copy: the same copy of the same clip is always the same."""
        digest = int(hashlib.sha1(f"{self.seed}:{Path(path).name}:{copy}".encode()).hexdigest()[:16], 16)
        return np.random.default_rng(digest)

    def __call__(self, wave: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """An augmented version of a mono waveform (its length may change with speed, fragment and pause)."""
        if self.fragment is not None:
            wave = _fragment(wave, float(rng.uniform(*self.fragment)), rng)
        if self.pause is not None:
            wave = self._with_pauses(wave, rng)
        if self.speed is not None:
            factor = float(rng.uniform(*self.speed))
            wave, _ = AF.speed(wave, self.sample_rate, factor)
        if self.pitch_semitones is not None:
            steps = round(rng.uniform(*self.pitch_semitones))
            if steps:
                wave = pitch_shift(wave, steps)
        if self.shift is not None:
            wave = _time_shift(wave, int(rng.uniform(-self.shift, self.shift) * self.sample_rate))
        if self.gain_db is not None:
            wave = wave * 10 ** (rng.uniform(*self.gain_db) / 20)
        if self.noise is not None and rng.random() < self.noise.p:
            noise = self._noise(wave.shape[-1], rng)
            wave = AF.add_noise(wave[None], noise[None], torch.tensor([rng.uniform(*self.noise.snr_db)]))[0]
        return wave

    def _with_pauses(self, wave: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """`wave` between two pauses, each as long as drawn from `pause` (seconds): low noise (`PAUSE_DBFS`)."""
        assert self.pause is not None
        level = 10 ** (rng.uniform(*PAUSE_DBFS) / 20)
        before, after = (round(rng.uniform(*self.pause) * self.sample_rate) for _ in range(2))
        pauses = torch.from_numpy((rng.standard_normal(before + after) * level).astype(np.float32))
        return torch.cat([pauses[:before], wave, pauses[before:]])

    def _noise(self, length: int, rng: np.random.Generator) -> torch.Tensor:
        assert self.noise is not None
        if self.noise.kind == "white":
            return torch.from_numpy(rng.standard_normal(length).astype(np.float32))
        if self.noise.kind == "pink":
            return _pink_noise(length, rng)
        path = self._noise_files[int(rng.integers(len(self._noise_files)))]
        noise = load_audio(path, self.sample_rate)
        repeats = -(-length // noise.shape[-1])
        start = int(rng.integers(0, noise.shape[-1]))
        return noise.repeat(repeats + 1)[start : start + length]

    def _find_noise_files(self) -> list[Path]:
        if self.noise is None or self.noise.kind != "files":
            if self.noise is not None and self.noise.kind not in ("white", "pink"):
                raise ConfigError(f"unknown noise kind {self.noise.kind!r}: choose white, pink or files")
            return []
        if not self.noise.folder or not Path(self.noise.folder).expanduser().is_dir():
            raise ConfigError(
                f"augment.noise.kind=files needs augment.noise.folder to be a folder: {self.noise.folder}"
            )
        files = sorted(p for p in Path(self.noise.folder).expanduser().rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise ConfigError(f"noise folder holds no audio files ({', '.join(AUDIO_SUFFIXES)}): {self.noise.folder}")
        return files


#: The level of a pause's noise (dB of full scale, RMS): a quiet room between sentences.
PAUSE_DBFS = (-70.0, -50.0)


def _fraction_range(fragment: Sequence[float] | None) -> tuple[float, float] | None:
    """`fragment` checked: the fractions of a clip a fragment keeps, `[low, high]` within (0, 1]."""
    if fragment is None:
        return None
    low, high = _pair(fragment)
    if not 0 < low <= high <= 1:
        raise ConfigError(f"augment.wave.fragment={list(fragment)}: give [low, high] fractions, 0 < low <= high <= 1")
    return low, high


def _seconds_range(pause: Sequence[float] | None) -> tuple[float, float] | None:
    """`pause` checked: the seconds a pause lasts, `[low, high]` with 0 <= low <= high."""
    if pause is None:
        return None
    low, high = _pair(pause)
    if not 0 <= low <= high:
        raise ConfigError(f"augment.wave.pause={list(pause)}: give [low, high] seconds, 0 <= low <= high")
    return low, high


def _pair(values: Sequence[float]) -> tuple[float, float]:
    """Two numbers, or a one-line ConfigError."""
    try:
        low, high = (float(value) for value in values)
    except (TypeError, ValueError):
        raise ConfigError(f"augment.wave: give a range as [low, high], not {values!r}") from None
    return low, high


def _fragment(wave: torch.Tensor, fraction: float, rng: np.random.Generator) -> torch.Tensor:
    """A contiguous piece of `wave`, `fraction` of its length, starting anywhere it fits."""
    length = max(1, round(wave.shape[-1] * fraction))
    start = int(rng.integers(0, wave.shape[-1] - length + 1))
    return wave[..., start : start + length]


def _noise_options(noise: dict | None) -> NoiseOptions | None:
    if noise is None:
        return None
    options = {**noise, "snr_db": tuple(noise.get("snr_db", NoiseOptions.snr_db))}
    try:
        return NoiseOptions(**options)
    except TypeError as exc:
        raise ConfigError(f"bad augment noise options {dict(noise)}: {exc}") from None


def pitch_shift(wave: torch.Tensor, steps: int, n_fft: int = 512) -> torch.Tensor:
    """Shift pitch by `steps` semitones, keeping the duration: phase-vocoder stretch, then resample.

    The algorithm of `torchaudio.functional.pitch_shift`, with the resampling ratio
    reduced to a small fraction: torchaudio resamples by `sample_rate / 2**(steps/12)`,
    whose huge reduced ratio makes it take seconds per clip instead of milliseconds.
    """
    ratio = Fraction(2 ** (steps / 12)).limit_denominator(64)
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True)
    advance = torch.linspace(0, torch.pi * hop, spec.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spec, float(1 / ratio), advance)
    longer = torch.istft(stretched, n_fft, hop, window=window, length=round(wave.shape[-1] * ratio))
    shifted = AF.resample(longer, ratio.numerator, ratio.denominator)
    return fit_length(shifted, wave.shape[-1])


def _time_shift(wave: torch.Tensor, offset: int) -> torch.Tensor:
    """Shift by `offset` samples (positive: later), filling with silence."""
    if offset == 0:
        return wave
    shifted = torch.zeros_like(wave)
    if offset > 0:
        shifted[offset:] = wave[:-offset]
    else:
        shifted[:offset] = wave[-offset:]
    return shifted


def _pink_noise(length: int, rng: np.random.Generator) -> torch.Tensor:
    """Noise with a 1/f power spectrum, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    pink = np.fft.irfft(spectrum, n=length)
    return torch.from_numpy((pink / (pink.std() + 1e-12)).astype(np.float32))


class SpecAugment:
    """Random frequency-row and time-column masks on feature batches, filled with each example's mean."""

    def __init__(self, freq_mask: int = 0, time_mask: int = 0, n_masks: int = 1) -> None:
        self.freq_mask = freq_mask
        self.time_mask = time_mask
        self.n_masks = n_masks

    def __call__(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self._mask(x) for name, x in features.items()}

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        fill = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        masked = x
        for _ in range(self.n_masks):  # torchaudio fills with one scalar: mark with NaN, then fill per example
            if self.freq_mask:
                masked = AF.mask_along_axis_iid(masked, self.freq_mask, float("nan"), axis=2)
            if self.time_mask and x.dim() == 4:
                masked = AF.mask_along_axis_iid(masked, min(self.time_mask, x.shape[-1]), float("nan"), axis=3)
        return torch.where(masked.isnan(), fill.expand_as(x), masked)


class Augmentation:
    """An augmentation policy (the `augment` config group): a waveform chain, SpecAugment, and how the waveform
    chain reaches training: `copies` cached augmented copies of each training clip, or `on_the_fly` (new ones
    every epoch). `before_split` (the report's protocol) augments every clip before the split: leaky."""

    def __init__(
        self,
        wave: WaveAugment | None = None,
        spec: SpecAugment | None = None,
        mode: str = "copies",
        copies: int = 0,
        before_split: bool = False,
        name: str = "custom",
    ) -> None:
        if mode not in ("copies", "on_the_fly"):
            raise ConfigError(f"unknown augment.mode {mode!r}: choose 'copies' or 'on_the_fly'")
        copies = int(copies) if wave is not None else 0
        if before_split and (mode != "copies" or not copies or wave is None):
            raise ConfigError("augment.before_split=true (the report's protocol) needs mode=copies, copies>=1 and wave")
        self.wave, self.spec, self.mode, self.copies, self.before_split = wave, spec, mode, copies, before_split
        self.name = name

    def copies_of(self, clips: Sequence[Clip]) -> list[Clip]:
        """The augmented copies (1..copies) of `clips`, as manifest entries."""
        return [clip.augmented(k) for clip in clips for k in range(1, self.copies + 1)]
