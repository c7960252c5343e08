"""Which clips may join a speaker's profile, and how much one clip can move it.

A speaker-adaptive model keeps each speaker's profile across requests (`emotion.serving.profiles`), so any
client that names a speaker changes what every later request of theirs is normalised by. A clip joins that
speaker's profile only if it is speech the model can learn the speaker from:

- not silent (`emotion.serving.recognizer.is_silent`) and not clipped (over `CLIPPED_SHARE` of its samples at
  full scale);
- not out of distribution: its features' mean squared z-score against the training population's statistics
  is at most `OUT_OF_DISTRIBUTION` (noise, tones and music score far above speech of any speaker);
- not a replay: no clip of the profile (or of the same request) lies within `REPLAY_DISTANCE` of it (RMS
  distance in population standard deviations: the same audio with a little noise added is the same clip).

So one clip's influence is bounded: an admitted clip's features lie within RMS sqrt(OUT_OF_DISTRIBUTION) of the
population's mean (in its standard deviations), so with n clips in a profile and shrinkage s it moves the
speaker's mean by at most sqrt(6) / (n + s) population standard deviations, RMS over the features. (Clamping
each feature to the population's mean +- 4 SD as well cost 2.3 points of UAR at 10 clips on SAVEE, whose
speakers sit far from the population, and was dropped.)

The thresholds were measured on SAVEE's held-out speakers (docs/speakers.md, `benchmarks/poisoning.py --calibrate`).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

import torch

from emotion.data.normalize import Moments, SpeakerNormalizer
from emotion.serving.profiles import ProfileStore, clip_digest

#: A clip with more than this share of its samples at full scale (|x| >= CLIPPED_LEVEL) is clipped: loud acted
#: speech reaches full scale too (up to 4.4% of a SAVEE clip's samples), a clip driven into clipping most of them.
CLIPPED_SHARE = 0.25
CLIPPED_LEVEL = 0.999
#: The largest mean squared z-score (against the population) of a clip that may join a profile.
OUT_OF_DISTRIBUTION = 6.0
#: Two clips closer than this (RMS distance of their features, in population standard deviations) are one.
REPLAY_DISTANCE = 0.3


def is_clipped(wave: torch.Tensor) -> bool:
    """True for a clip with over `CLIPPED_SHARE` of its samples at full scale."""
    return bool((wave.abs() >= CLIPPED_LEVEL).float().mean() > CLIPPED_SHARE)


@dataclass
class ClipsOfRequest:
    """A request's clips as a profile sees them: their features (one clip a row), speakers, and, when given, their
    waveforms and whether each is silent."""

    raw: Mapping[str, torch.Tensor]
    speakers: Sequence[str | None]
    waves: Sequence[torch.Tensor] | None = None
    silent: Sequence[bool] | None = None

    def digest(self, row: int) -> str:
        """A clip's identity: a digest of its samples, else of its features."""
        if self.waves is not None:
            return clip_digest(self.waves[row])
        return clip_digest(torch.cat([x[row].flatten().float() for x in self.raw.values()]))


def enrolled_profiles(
    normalizer: SpeakerNormalizer,
    store: ProfileStore,
    model: str,
    clips: ClipsOfRequest,
    updates: Sequence[bool],
) -> dict[str, Moments]:
    """Each named speaker's profile: the clips `store` keeps of theirs for `model`, and those of this request it
    admits (`refusal_reason`); the admitted clips of rows whose `updates` is true are kept."""
    named = sorted({speaker for speaker in clips.speakers if speaker is not None})
    held = store.held(model, named)
    z = z_scores(normalizer, clips.raw)
    profile = {speaker: [moments for _, moments in held.get(speaker, [])] for speaker in named}
    seen = {speaker: [mean_z(normalizer, moments) for moments in profile[speaker]] for speaker in named}
    digests = {speaker: {digest for digest, _ in held.get(speaker, [])} for speaker in named}
    additions = []
    for row, speaker in enumerate(clips.speakers):
        digest = clips.digest(row) if speaker is not None else ""
        if speaker is None or digest in digests[speaker]:
            continue
        flat = torch.cat([x[row].flatten() for x in z.values()])
        wave = clips.waves[row] if clips.waves is not None else None
        silent = bool(clips.silent[row]) if clips.silent is not None else False
        if refusal_reason(wave, silent, flat, seen[speaker]) is not None:
            continue
        moments = Moments.of(clips.raw, [row])
        profile[speaker].append(moments)
        seen[speaker].append(flat)
        digests[speaker].add(digest)
        if updates[row]:
            additions.append((speaker, digest, moments))
    if additions:
        store.add(model, additions)
    return {speaker: reduce(operator.add, clips_of) for speaker, clips_of in profile.items() if clips_of}


def z_scores(normalizer: SpeakerNormalizer, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each input standardised by the training population's mean and standard deviation."""
    assert normalizer.population is not None
    population = normalizer.population
    return {
        name: (x.float() - getattr(population, f"{name}_mean")) / getattr(population, f"{name}_std")
        for name, x in inputs.items()
    }


def mean_z(normalizer: SpeakerNormalizer, moments: Moments) -> torch.Tensor:
    """The z-scores of the mean features of a clip a profile holds, flattened."""
    means = {name: (moments.sum[name] / moments.count[name]).float().unsqueeze(0) for name in moments.sum}
    return torch.cat([x[0].flatten() for x in z_scores(normalizer, means).values()])


def refusal_reason(
    wave: torch.Tensor | None, silent: bool, z: torch.Tensor, others: Sequence[torch.Tensor]
) -> str | None:
    """Why a clip (`z`: its features' z-scores, flattened) may not join its speaker's profile (`others`: the
    z-scores of the profile's clips and of the request's earlier ones), or None if it may."""
    if silent:
        return "silent"
    if wave is not None and is_clipped(wave):
        return "clipped"
    if float(z.square().mean()) > OUT_OF_DISTRIBUTION:
        return "not speech the model knows"
    if any(float((z - other).square().mean().sqrt()) < REPLAY_DISTANCE for other in others):
        return "a replay of a clip the profile holds"
    return None
