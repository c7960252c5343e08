"""A speaker-adaptive model's blend curve: how much its adaptive answer weighs against its non-adaptive one for a
speaker of n clips, as (clips, weight) points (`emotion.data.normalize.SpeakerNormalizer.weight`).

A scikit-learn head learns its curve in training from its training speakers' own k-clip curves
(`emotion.pipeline.blend`) and keeps it in its recipe's `normalize` settings; a model file may hold at most
`MAX_BLEND_POINTS` points, clips whole and rising from 1, weights in [0, 1] and never falling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, Field, Strict

from emotion.errors import ConfigError

#: The most (clips, weight) points a blend curve holds.
MAX_BLEND_POINTS = 12
#: A blend curve: (clips, weight of the adaptive answer) points.
BlendCurve = tuple[tuple[int, float], ...]


def checked_curve(points: Sequence[Sequence[float]] | None) -> BlendCurve | None:
    """The curve's points as given (None: no curve), checked; ConfigError in one line unless they are at most
    `MAX_BLEND_POINTS` (clips, weight) pairs, clips whole and rising from 1, weights in [0, 1] and never falling."""
    if points is None:
        return None
    try:
        curve = tuple((_whole(clips), _number(weight)) for clips, weight in points)
    except (TypeError, ValueError):
        curve = ()
    clips, weights = np.array([c for c, _ in curve]), np.array([w for _, w in curve])
    rising = 0 < len(curve) <= MAX_BLEND_POINTS and clips[0] >= 1 and all(np.diff(clips) > 0)
    if rising and all(np.diff(weights) >= 0) and all((weights >= 0) & (weights <= 1)):
        return curve
    raise ConfigError(
        f"normalize.blend_curve={_short(points)}: give up to {MAX_BLEND_POINTS} [clips, weight] pairs, clips whole "
        "and rising from 1, weights in [0, 1] never falling"
    )


def curve_weight(curve: BlendCurve, clips: int) -> float:
    """The weight of a speaker of `clips` clips: linear in n between the curve's points, its first point's weight
    below the first, its last's past the last; 0 with no clip."""
    if clips < 1:
        return 0.0
    points = np.array(curve, dtype=float)
    return float(np.interp(clips, points[:, 0], points[:, 1]))


def _whole(clips: object) -> int:
    if isinstance(clips, bool) or not isinstance(clips, int | np.integer):
        raise TypeError("clips are counted in whole clips")
    return int(clips)


def _number(weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float | np.number):
        raise TypeError("a weight is a number")
    return float(weight)


def _short(points: object) -> str:
    said = repr(points)
    return said if len(said) <= 80 else f"{said[:77]}..."


def _schema_checked(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    try:
        checked_curve(points)
    except ConfigError:
        raise ValueError(f"give 1 to {MAX_BLEND_POINTS} points, clips rising and weights never falling") from None
    return points


#: A blend curve as a model file's schema reads it (`emotion.serving.recipes`): (clips, weight) pairs, each strictly
#: typed and bounded (a file's list is taken for a pair), at most `MAX_BLEND_POINTS`, clips rising, weights not falling.
CurveSchema = Annotated[
    list[
        Annotated[
            tuple[Annotated[int, Strict(), Field(ge=1, le=10_000)], Annotated[float, Strict(), Field(ge=0, le=1)]],
            Strict(False),
        ]
    ],
    Field(max_length=MAX_BLEND_POINTS),
    AfterValidator(_schema_checked),
]
