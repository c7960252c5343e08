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
from tqdm.auto import tqdm

from emotion.data.corpora.crema_d import SENTENCES, CremaD
from emotion.data.voice import VOWELS, Prosody, Speaker, synthesize

log = logging.getLogger(__name__)

#: Bump when the synthesis changes, so caches of older corpora are not reused.
GENERATOR_VERSION = 1

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
    return [str(v) for v in rng.choice(tuple(VOWELS), size=int(rng.integers(6, 11)))]


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
