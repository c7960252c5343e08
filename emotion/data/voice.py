"""Source-filter synthesis of one utterance: a glottal pulse train shaped by vowel formants and a speaker's voice.

`synthesize` renders the vowels of a sentence with a `Prosody` (F0 level, range and jitter, shimmer,
syllable rate, spectral tilt, breathiness, loudness, first-formant shift) in a `Speaker`'s voice (base
pitch, vocal-tract length, expressiveness, level, speed, noise floor). `emotion.data.synthetic` picks
the prosody of each emotion and writes the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

#: Vowel formants (F1, F2, F3 in Hz) of an average adult vocal tract.
VOWELS: dict[str, tuple[float, float, float]] = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (270, 2290, 3010),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
    "ae": (660, 1720, 2410),
    "er": (490, 1350, 1690),
}


@dataclass(frozen=True)
class Prosody:
    """Voice settings of one emotion, as deviations a speaker applies to their own voice."""

    f0_shift: float  # semitones above the speaker's base pitch
    f0_range: float  # semitones of pitch excursion over the utterance
    jitter: float  # relative cycle-to-cycle F0 perturbation
    shimmer: float  # relative pulse-to-pulse amplitude perturbation
    rate: float  # syllables per second
    tilt: float  # one-pole low-pass coefficient on the source: higher is darker
    breathiness: float  # aspiration noise relative to voicing
    loudness: float  # dB relative to the speaker's neutral level
    f1_shift: float  # relative raise of the first formant (wider mouth opening)


@dataclass(frozen=True)
class Speaker:
    """Voice traits fixed for one speaker."""

    number: int
    base_f0: float  # Hz
    vtl_scale: float  # formant scale: >1 is a shorter vocal tract
    expressiveness: float  # how far this speaker moves from neutral when acting
    loudness: float  # dB
    speed: float  # syllable-rate factor
    noise_floor: float  # dB of the recording's background noise


def synthesize(
    vowels: list[str],
    prosody: Prosody,
    speaker: Speaker,
    rng: np.random.Generator,
    sample_rate: int,
    min_duration: float,
    max_duration: float,
) -> np.ndarray:
    """Render one utterance as float32 samples in [-1, 1]."""
    syllable_durations = rng.uniform(0.75, 1.25, size=len(vowels)) / prosody.rate
    lead, trail = rng.uniform(0.1, 0.2, size=2)
    speech = float(np.clip(syllable_durations.sum(), min_duration - lead - trail, max_duration - lead - trail))
    syllable_durations *= speech / syllable_durations.sum()
    n = int((lead + speech + trail) * sample_rate)
    t = np.arange(n) / sample_rate

    f0 = _f0_contour(t, lead, speech, prosody, speaker, rng, sample_rate)
    source = _glottal_source(f0, prosody, rng, sample_rate)
    out = np.zeros(n)
    start = lead
    for vowel, duration in zip(vowels, syllable_durations, strict=True):
        out += _syllable(source, vowel, start, duration, prosody, speaker, rng, sample_rate)
        start += duration
    gain_db = prosody.loudness + speaker.loudness - 14
    out *= 10 ** (gain_db / 20) / (np.abs(out).max() + 1e-9)
    out += rng.normal(0, 10 ** (speaker.noise_floor / 20), size=n)
    return np.tanh(out).astype(np.float32)


def _f0_contour(
    t: np.ndarray,
    lead: float,
    speech: float,
    prosody: Prosody,
    speaker: Speaker,
    rng: np.random.Generator,
    sample_rate: int,
) -> np.ndarray:
    """F0 in Hz per sample: declining line plus accent bumps, with slow drift and cycle jitter."""
    progress = np.clip((t - lead) / speech, 0, 1)
    n_accents = int(rng.integers(2, 4))
    centres = np.sort(rng.uniform(0.1, 0.9, n_accents))
    accents = sum(np.exp(-0.5 * ((progress - c) / 0.08) ** 2) * rng.uniform(0.5, 1.0) for c in centres)
    semitones = prosody.f0_shift + prosody.f0_range * (accents - 0.3 - 0.4 * progress)
    drift = lfilter([0.001], [1, -0.999], rng.normal(0, 1, t.size)) * prosody.f0_range * 0.5
    jitter = lfilter([0.3], [1, -0.7], rng.normal(0, prosody.jitter, t.size))
    return speaker.base_f0 * 2 ** ((semitones + drift) / 12) * (1 + jitter)


def _glottal_source(f0: np.ndarray, prosody: Prosody, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Pulse train at the F0 contour with shimmer, glottal roll-off, emotion tilt and aspiration noise."""
    phase = np.cumsum(f0 / sample_rate)
    pulse_at = np.nonzero(np.diff(np.floor(phase)) > 0)[0] + 1
    pulses = np.zeros(f0.size)
    pulses[pulse_at] = np.clip(1 + rng.normal(0, prosody.shimmer, pulse_at.size), 0.2, None)
    voiced = lfilter([1.0], [1, -1.94, 0.9409], pulses)  # two poles at 0.97: glottal flow roll-off
    voiced = np.diff(voiced, prepend=0.0)  # lip radiation
    voiced = lfilter([1 - prosody.tilt], [1, -prosody.tilt], voiced)
    voiced /= np.abs(voiced).max() + 1e-9
    aspiration = np.diff(rng.normal(0, 1, f0.size), prepend=0.0) * 0.25
    return voiced + prosody.breathiness * 3 * aspiration


def _syllable(
    source: np.ndarray,
    vowel: str,
    start: float,
    duration: float,
    prosody: Prosody,
    speaker: Speaker,
    rng: np.random.Generator,
    sample_rate: int,
) -> np.ndarray:
    """One consonant-vowel syllable: a fricative burst, then the source through the vowel's formants."""
    out = np.zeros(source.size)
    onset = duration * rng.uniform(0.15, 0.3)
    a, b = int(start * sample_rate), int((start + onset) * sample_rate)
    burst = lfilter(*_resonator(rng.uniform(2500, 6000), 900, sample_rate), rng.normal(0, 1, b - a))
    out[a:b] = burst * np.hanning(b - a) * 0.15
    c, d = b, min(int((start + duration) * sample_rate), source.size)
    formants = np.array(VOWELS[vowel]) * speaker.vtl_scale * rng.uniform(0.95, 1.05, 3)
    formants[0] *= 1 + prosody.f1_shift
    segment = source[c:d]
    for frequency, bandwidth in zip(formants, (90, 110, 170), strict=True):
        segment = lfilter(*_resonator(frequency, bandwidth, sample_rate), segment)
    ramp = min(int(0.02 * sample_rate), (d - c) // 2)
    envelope = np.ones(d - c)
    envelope[:ramp] = np.linspace(0, 1, ramp)
    envelope[d - c - ramp :] = np.linspace(1, 0, ramp)
    out[c:d] = segment * envelope
    return out


def _resonator(frequency: float, bandwidth: float, sample_rate: int) -> tuple[list[float], list[float]]:
    """Coefficients of a two-pole resonator with unit gain at DC."""
    radius = np.exp(-np.pi * bandwidth / sample_rate)
    a1, a2 = -2 * radius * np.cos(2 * np.pi * min(frequency, 0.45 * sample_rate) / sample_rate), radius**2
    return [1 + a1 + a2], [1, a1, a2]
