"""The embedded synthetic corpus: acted-emotion-like speech made by source-filter synthesis.

Each clip is a glottal pulse train whose F0 contour (level, range, jitter),
loudness (shimmer), syllable rate, spectral tilt and breathiness depend on the
emotion and its intensity, shaped by per-syllable vowel formants and by the
speaker's voice (base pitch, vocal-tract length, expressiveness). Clips are
written as 16 kHz mono WAV files named in the CREMA-D scheme
`{speaker:04d}_{SENTENCE}_{EMO}_{LEVEL}.wav`, so the CREMA-D reader reads them.

Generation is deterministic: every clip draws from its own random stream seeded
by (seed, speaker, sentence, emotion). Speakers differ in how expressive they
are and every clip is perturbed, so the classes overlap the way acted emotions
do: angry and happy share high arousal, sad, neutral and disgust low arousal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter
from tqdm.auto import tqdm

from emotion.data.corpora.crema_d import SENTENCES, CremaD

log = logging.getLogger(__name__)

#: Bump when the synthesis changes, so caches of older corpora are not reused.
GENERATOR_VERSION = 1

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
_VOWEL_NAMES = tuple(VOWELS)


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


NEUTRAL = Prosody(
    f0_shift=0, f0_range=2.5, jitter=0.006, shimmer=0.04, rate=4.0, tilt=0.55, breathiness=0.06, loudness=0, f1_shift=0
)
PROSODY: dict[str, Prosody] = {
    "neutral": NEUTRAL,
    "angry": Prosody(4.0, 5.0, 0.012, 0.09, 4.7, 0.25, 0.03, 7.0, 0.10),
    "happy": Prosody(5.0, 7.0, 0.009, 0.06, 4.5, 0.40, 0.06, 4.0, 0.06),
    "fear": Prosody(6.0, 3.0, 0.028, 0.10, 5.1, 0.50, 0.20, 1.0, 0.02),
    "sad": Prosody(-2.0, 1.5, 0.012, 0.05, 3.0, 0.75, 0.18, -6.0, -0.04),
    "disgust": Prosody(-1.0, 4.0, 0.022, 0.09, 3.3, 0.60, 0.10, -1.0, 0.0),
}
#: How far each CREMA-D intensity level moves the voice from neutral (XX: drawn per clip).
INTENSITY_SCALE: dict[str, float | None] = {"LO": 0.55, "MD": 0.9, "HI": 1.3, "XX": None}

_CODE_OF_EMOTION = {name: code for code, name in CremaD.labels.items()}


@dataclass(frozen=True)
class SyntheticCorpusConfig:
    """Size and randomness of the synthetic corpus; every field is part of the cache key."""

    n_speakers: int = 24
    n_sentences: int = 12
    seed: int = 0
    sample_rate: int = 16000
    min_duration: float = 1.5
    max_duration: float = 3.0
    variability: float = 1.0  # scales speaker and clip perturbations: higher overlaps the classes more

    def key(self) -> str:
        payload = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


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


def make_speaker(number: int, cfg: SyntheticCorpusConfig) -> Speaker:
    """Draw the voice of speaker `number` (1001, 1002, ... as in CREMA-D)."""
    rng = np.random.default_rng([cfg.seed, number, 0])
    female = rng.random() < 0.5
    v = cfg.variability
    return Speaker(
        number=number,
        base_f0=float(rng.uniform(170, 250) if female else rng.uniform(90, 150)),
        vtl_scale=float(rng.uniform(1.1, 1.22) if female else rng.uniform(0.92, 1.04)),
        expressiveness=float(np.clip(rng.normal(1.0, 0.3 * v), 0.35, 1.7)),
        loudness=float(rng.normal(0, 3 * v)),
        speed=float(np.clip(rng.normal(1.0, 0.12 * v), 0.7, 1.3)),
        noise_floor=float(rng.uniform(-62, -45)),
    )


def sentence_vowels(sentence: str, seed: int) -> list[str]:
    """The fixed vowel sequence of a sentence (6 to 10 syllables)."""
    digest = int(hashlib.sha1(f"{seed}:{sentence}".encode()).hexdigest(), 16)
    rng = np.random.default_rng(digest % 2**32)
    return [str(v) for v in rng.choice(_VOWEL_NAMES, size=int(rng.integers(6, 11)))]


def clip_prosody(emotion: str, level: str, speaker: Speaker, rng: np.random.Generator, variability: float) -> Prosody:
    """Prosody of one clip: neutral moved toward the emotion, scaled by intensity and speaker, then perturbed."""
    scale = INTENSITY_SCALE[level]
    if scale is None:
        scale = float(rng.uniform(0.6, 1.2))
    scale *= speaker.expressiveness
    target = PROSODY[emotion]
    values = {}
    for field in fields(Prosody):
        neutral, goal = getattr(NEUTRAL, field.name), getattr(target, field.name)
        spread = abs(goal - neutral) + _PERTURBATION_FLOOR[field.name]
        values[field.name] = neutral + scale * (goal - neutral) + rng.normal(0, 0.35 * variability * spread)
    values["rate"] = max(values["rate"], 2.0) * speaker.speed
    values["tilt"] = float(np.clip(values["tilt"], 0.0, 0.95))
    for name in ("jitter", "shimmer", "breathiness", "f0_range"):
        values[name] = max(values[name], 0.0)
    return Prosody(**values)


# Minimum perturbation of each prosody field, so that even neutral clips vary.
_PERTURBATION_FLOOR = {
    "f0_shift": 1.5,
    "f0_range": 1.0,
    "jitter": 0.004,
    "shimmer": 0.02,
    "rate": 0.4,
    "tilt": 0.1,
    "breathiness": 0.03,
    "loudness": 2.0,
    "f1_shift": 0.03,
}


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


def clip_specs(cfg: SyntheticCorpusConfig) -> list[tuple[int, str, str, str]]:
    """(speaker, sentence, emotion code, level) of every clip: each speaker says each sentence in each emotion."""
    specs = []
    for speaker in range(1001, 1001 + cfg.n_speakers):
        for s_index, sentence in enumerate(SENTENCES[: cfg.n_sentences]):
            for e_index, code in enumerate(CremaD.labels):
                level = "XX" if code == "NEU" else ("LO", "MD", "HI", "XX")[(speaker + s_index + e_index) % 4]
                specs.append((speaker, sentence, code, level))
    return specs


def render_clip(cfg: SyntheticCorpusConfig, spec: tuple[int, str, str, str]) -> np.ndarray:
    """Render the clip of `spec` deterministically."""
    speaker_number, sentence, code, level = spec
    speaker = make_speaker(speaker_number, cfg)
    rng = np.random.default_rng(
        [cfg.seed, speaker_number, SENTENCES.index(sentence) + 1, list(CremaD.labels).index(code) + 1]
    )
    prosody = clip_prosody(CremaD.labels[code], level, speaker, rng, cfg.variability)
    vowels = sentence_vowels(sentence, cfg.seed)
    return synthesize(vowels, prosody, speaker, rng, cfg.sample_rate, cfg.min_duration, cfg.max_duration)


def _write_clips(cfg: SyntheticCorpusConfig, folder: Path, specs: list[tuple[int, str, str, str]]) -> int:
    for spec in specs:
        speaker, sentence, code, level = spec
        sf.write(
            folder / f"{speaker:04d}_{sentence}_{code}_{level}.wav",
            render_clip(cfg, spec),
            cfg.sample_rate,
            subtype="PCM_16",
        )
    return len(specs)


def generate_corpus(cfg: SyntheticCorpusConfig, cache_dir: str | Path, workers: int | None = None) -> Path:
    """Write the corpus of `cfg` under `cache_dir` once and return its folder.

    The corpus is generated into a temporary folder and renamed into place, so a
    run that dies half-way leaves nothing that a later run would take for complete.
    """
    target = Path(cache_dir).expanduser() / "synthetic" / cfg.key()
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    specs = clip_specs(cfg)
    workers = workers or min(os.cpu_count() or 1, 8)
    chunks = [specs[i : i + 32] for i in range(0, len(specs), 32)]
    with tqdm(total=len(specs), desc="Synthesising corpus", unit="clip") as bar:
        if workers == 1:
            for chunk in chunks:
                bar.update(_write_clips(cfg, staging, chunk))
        else:
            with ProcessPoolExecutor(workers) as pool:
                for done in pool.map(_write_clips, [cfg] * len(chunks), [staging] * len(chunks), chunks):
                    bar.update(done)
    (staging / "corpus.json").write_text(json.dumps({"version": GENERATOR_VERSION, **asdict(cfg)}, indent=2))
    try:
        staging.rename(target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    log.info("synthetic corpus of %d clips written to %s", len(specs), target)
    return target
