"""A speaker-adaptive scikit-learn head's blend curve, learned from its own training speakers' k-clip curves.

Served, a speaker of n clips gets w(n) * the adaptive answer + (1 - w(n)) * the non-adaptive twin's
(`emotion.serving.recognizer`). After the run has chosen both heads (`emotion.pipeline.estimator`), each inner
speaker fold fits the two chosen candidates on its training speakers, and each held-out speaker is served as a new
one: for each profile size n of `CLIPS`, in `DRAWS` seeded draws, n - 1 of the speaker's clips (drawn from all of
theirs, other classes' too: label-free) make the profile, and every other clip of theirs is normalised by that
profile and itself (n clips, the served normaliser's statistics with its shrinkage), as a clip sent to the served
model is; `all` the speaker's clips where they have fewer; and last with all of their clips (`WHOLE`: its point at
the speakers' median count). Both heads' probabilities are recorded, and for each n the weight of `WEIGHTS` is kept
whose blend has the best mean log-likelihood among those that lose no UAR against the twin in any draw (pooled over
the held-out speakers): where the adaptive head does not beat the twin, the weight stays 0. Each is then at most the
(n / min_clips)^2 rule's (the inner folds train the twin on one speaker fewer than the model's, which on few
speakers makes the adaptive head look better than it serves: SAVEE), and the weights are made non-decreasing in n
from above (each the least of those at its size and beyond), so a weight is never larger than the evidence at more
clips allows: the learned curve only ever lowers the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from emotion.data.blending import BlendCurve
from emotion.data.normalize import Moments, SpeakerNormalizer
from emotion.metrics import unweighted_average_recall

#: The profile sizes (clips, the scored one included) at which a weight is learned; then at `WHOLE`.
CLIPS = (1, 2, 3, 4, 6, 8, 10, 16, 32)
#: The size that stands for all of a held-out speaker's clips: its point sits at their median count (where that
#: is past `CLIPS`), so a speaker with as many clips as the training speakers had is served as they were.
WHOLE = 10**6
#: The weights of the adaptive answer tried at each size.
WEIGHTS = tuple(round(float(w), 1) for w in np.linspace(0.0, 1.0, 11))
#: Seeded draws of each profile size for each held-out speaker.
DRAWS = 3
#: A fitted head from (rows, labels, speakers): the chosen candidate fitted (and calibrated) on them.
Fit = Callable[[np.ndarray, np.ndarray, list[str]], Any]


@dataclass
class InnerClips:
    """The run's training and validation clips as the blend's learning reads them: features before the
    `normalize` stage (one clip a row), the adaptive head's rows (after it) and the twin's (before), labels,
    speakers, which clips are originals (not augmented copies), and other classes' clips of the same speakers
    (`pool`: they join profiles, label-free)."""

    raw: dict[str, torch.Tensor]
    adaptive_rows: np.ndarray
    twin_rows: np.ndarray
    labels: np.ndarray
    speakers: list[str]
    original: np.ndarray
    pool: dict[str, torch.Tensor] = field(default_factory=dict)
    pool_speakers: list[str] = field(default_factory=list)


@dataclass
class Served:
    """Each scored clip of the simulation: its profile size on the grid, the clips its profile held, draw, label and
    both heads' probabilities."""

    sizes: list[int] = field(default_factory=list)
    profile: list[int] = field(default_factory=list)
    draws: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    adaptive: list[np.ndarray] = field(default_factory=list)
    twin: list[np.ndarray] = field(default_factory=list)


def learn_curve(
    clips: InnerClips,
    folds: list[tuple[np.ndarray, np.ndarray]],
    fit_adaptive: Fit,
    fit_twin: Fit,
    normalizer: SpeakerNormalizer,
    rows_of: Callable[[Mapping[str, torch.Tensor]], np.ndarray],
    classes: int,
) -> tuple[BlendCurve, dict[str, Any]]:
    """The learned curve ((clips, weight) points on `CLIPS`, and at the speakers' whole count) and, per size, what
    it was learned from: the twin's, the adaptive head's and the chosen blend's UAR (mean over draws) and the weight
    chosen there."""
    served = Served()
    shapes = {name: tuple(x.shape[1:]) for name, x in clips.raw.items()}
    for train, held in folds:
        speakers = [clips.speakers[i] for i in train]
        adaptive = fit_adaptive(clips.adaptive_rows[train], clips.labels[train], speakers)
        twin = fit_twin(clips.twin_rows[train], clips.labels[train], speakers)
        inner = SpeakerNormalizer(shapes, "speaker", normalizer.scale, normalizer.min_clips, normalizer.shrinkage)
        inner.fit({name: x[train[clips.original[train]]] for name, x in clips.raw.items()})  # the fold's population
        for speaker in sorted({clips.speakers[i] for i in held}):
            rows = np.array([i for i in held if clips.speakers[i] == speaker and clips.original[i]])
            serve_speaker(clips, speaker, rows, inner, (adaptive, twin), rows_of, classes, served)
    return chosen_curve(served, normalizer.min_clips)


def serve_speaker(
    clips: InnerClips,
    speaker: str,
    rows: np.ndarray,
    normalizer: SpeakerNormalizer,
    heads: tuple[Any, Any],
    rows_of: Callable[[Mapping[str, torch.Tensor]], np.ndarray],
    classes: int,
    served: Served,
    sizes: Sequence[int] = (*CLIPS, WHOLE),
    draws: int = DRAWS,
) -> None:
    """One held-out speaker served with profiles of each size and draw; both heads' probabilities into `served`."""
    own = [i for i, s in enumerate(clips.pool_speakers) if s == speaker]
    inputs = {name: torch.cat([x[rows], clips.pool[name][own]]) if own else x[rows] for name, x in clips.raw.items()}
    each = clip_moments(inputs)
    scorable, count = len(rows), len(rows) + len(own)
    twin = probabilities(heads[1], clips.twin_rows[rows], classes)
    for size in sizes:
        for draw in range(draws):
            order = np.random.default_rng([size, draw]).permutation(count).tolist()
            whole = size - 1 >= count  # fewer clips than the size: the profile of all of them
            enrolled = order if whole else order[: size - 1]
            scored = [j for j in range(scorable) if whole or j not in set(enrolled)]
            statistics = normalizer.statistics(profiles_of(each, enrolled, scored, whole))
            normalized = {
                name: normalizer.standardize(x[scored].float(), *statistics[name]) for name, x in inputs.items()
            }
            adaptive = probabilities(heads[0], rows_of(normalized), classes)
            served.sizes += [size] * len(scored)
            served.profile += [len(enrolled) + (0 if whole else 1)] * len(scored)
            served.draws += [draw] * len(scored)
            served.labels += clips.labels[rows[scored]].tolist()
            served.adaptive += list(adaptive)
            served.twin += list(twin[scored])


def clip_moments(inputs: Mapping[str, torch.Tensor]) -> Moments:
    """Each clip's own moments, stacked (a leading clip dimension on every sum; `count`: each clip's values)."""
    sums, squares, count = {}, {}, {}
    for name, x in inputs.items():
        dims = list(range(3, x.dim()))
        values = x.double()
        sums[name] = values.sum(dim=dims, keepdim=True) if dims else values
        squares[name] = values.square().sum(dim=dims, keepdim=True) if dims else values.square()
        count[name] = float(x[0].numel() / sums[name][0].numel())
    return Moments(1, count, sums, squares)


def profiles_of(each: Moments, enrolled: list[int], scored: list[int], whole: bool) -> Moments:
    """The profile each scored clip is served with, stacked: the enrolled clips' moments and its own (the same sums
    a served profile adds up, `emotion.serving.enrolment`), or the enrolled clips' alone where they are all."""
    clips = len(enrolled) + (0 if whole else 1)
    sums, squares = {}, {}
    for name, per_clip in each.sum.items():
        summed, squared = per_clip[enrolled].sum(dim=0), each.sumsq[name][enrolled].sum(dim=0)
        sums[name] = summed.expand(len(scored), *summed.shape) if whole else summed + per_clip[scored]
        squares[name] = squared.expand(len(scored), *squared.shape) if whole else squared + each.sumsq[name][scored]
    return Moments(clips, {name: clips * per for name, per in each.count.items()}, sums, squares)


def probabilities(estimator: Any, rows: np.ndarray, classes: int) -> np.ndarray:
    """(rows, classes) probabilities of a fitted classifier (a class it never saw: 0)."""
    predicted = estimator.predict_proba(rows)
    full = np.zeros((len(rows), classes))
    full[:, np.asarray(estimator.classes_, dtype=int)] = predicted
    return full


def chosen_curve(served: Served, min_clips: int) -> tuple[BlendCurve, dict[str, Any]]:
    """Per size (`CLIPS`, then all of each speaker's clips: `WHOLE`) the weight of `WEIGHTS` with the best
    log-likelihood among those losing no UAR in any draw, at most the (n / min_clips)^2 rule's, then made
    non-decreasing from above; and per size what it was chosen from."""
    sizes, draws, labels = np.array(served.sizes), np.array(served.draws), np.array(served.labels)
    adaptive, twin, profile = np.array(served.adaptive), np.array(served.twin), np.array(served.profile)
    points, best, said = [], [], {}
    for size in (*CLIPS, WHOLE):
        at, clips = sizes == size, size
        if size == WHOLE:
            if not at.any() or np.median(profile[at]) <= CLIPS[-1]:
                continue  # speakers of few clips: the largest size of `CLIPS` served them whole
            clips = int(np.median(profile[at]))
        candidates = {w: blend_scores(w * adaptive[at] + (1 - w) * twin[at], labels[at], draws[at]) for w in WEIGHTS}
        floor = candidates[0.0][1]
        safe = [w for w, (_, uar) in candidates.items() if all(uar >= floor)]
        weight = max(safe, key=lambda w: (candidates[w][0], -w))
        points.append(clips)
        best.append(min(weight, round(min(1.0, clips / min_clips) ** 2, 2)))
        uar = {name: round(float(candidates[w][1].mean()), 4) for name, w in (("twin", 0.0), ("adaptive", 1.0))}
        said[str(clips)] = uar | {"blend": round(float(candidates[weight][1].mean()), 4), "weight": weight}
    rising = [min(best[i:]) for i in range(len(best))]
    return tuple(zip(points, rising, strict=True)), said


def blend_scores(blended: np.ndarray, labels: np.ndarray, draws: np.ndarray) -> tuple[float, np.ndarray]:
    """A blend's mean log-likelihood of the true classes, and its UAR in each draw."""
    likelihood = float(np.log(np.clip(blended[np.arange(len(labels)), labels], 1e-12, None)).mean())
    guesses = blended.argmax(axis=1)
    uar = [unweighted_average_recall(labels[draws == d], guesses[draws == d]) for d in sorted(set(draws.tolist()))]
    return likelihood, np.array(uar)
