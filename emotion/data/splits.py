"""Partitioning a manifest into train, validation and test sets.

`speaker` (the default) keeps every speaker in one partition, so test scores
measure how a model does on voices it never heard. `clip` splits clips at
random, as the report did; its scores are optimistic because a speaker's other
clips sit in training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from emotion.data.corpora import Clip
from emotion.errors import DataError

PARTITIONS = ("train", "val", "test")
SplitStrategy = Literal["speaker", "clip"]


@dataclass(frozen=True)
class Split:
    """Manifest indices of each partition."""

    train: list[int]
    val: list[int]
    test: list[int]

    def partition(self, name: str) -> list[int]:
        return getattr(self, name)

    def summary(self, clips: Sequence[Clip]) -> dict[str, dict]:
        """Speakers and class counts per partition, for logging."""
        return {
            name: {
                "clips": len(self.partition(name)),
                "speakers": sorted({clips[i].speaker for i in self.partition(name)}),
                "classes": dict(sorted(Counter(clips[i].emotion for i in self.partition(name)).items())),
            }
            for name in PARTITIONS
        }


def split_manifest(
    clips: Sequence[Clip],
    strategy: SplitStrategy = "speaker",
    val_fraction: float = 0.167,
    test_fraction: float = 0.167,
    seed: int = 0,
) -> Split:
    """Split `clips` into train/val/test, class-stratified and seeded."""
    if strategy == "speaker":
        split = _split_by_speaker(clips, val_fraction, test_fraction, seed)
        check_speaker_disjoint(clips, split)
        return split
    if strategy == "clip":
        return _split_by_clip(clips, val_fraction, test_fraction, seed)
    raise DataError(f"unknown split strategy {strategy!r}: choose 'speaker' or 'clip'")


def check_speaker_disjoint(clips: Sequence[Clip], split: Split) -> None:
    """Raise DataError if any speaker has clips in two partitions."""
    owners: dict[str, str] = {}
    for name in PARTITIONS:
        for i in split.partition(name):
            first = owners.setdefault(clips[i].speaker, name)
            if first != name:
                raise DataError(f"speaker {clips[i].speaker} is in both the {first} and {name} partitions")


def _split_by_speaker(clips: Sequence[Clip], val_fraction: float, test_fraction: float, seed: int) -> Split:
    speakers = sorted({c.speaker for c in clips})
    if len(speakers) < 3:
        raise DataError(f"a speaker-independent split needs at least 3 speakers, the corpus has {len(speakers)}")
    indices = np.arange(len(clips))
    rest, test = _hold_out_speakers(clips, indices, test_fraction, seed)
    train, val = _hold_out_speakers(clips, rest, val_fraction / (1 - test_fraction), seed + 1)
    return Split(train=sorted(train.tolist()), val=sorted(val.tolist()), test=sorted(test.tolist()))


def _hold_out_speakers(
    clips: Sequence[Clip], indices: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about `fraction` of the speakers of `indices`, keeping class proportions (one fold of K)."""
    groups = np.array([clips[i].speaker for i in indices])
    n_splits = min(max(2, round(1 / fraction)), len(set(groups)))
    labels = np.array([clips[i].emotion for i in indices])
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, held = next(folds.split(indices, labels, groups))
    return indices[keep], indices[held]


def _split_by_clip(clips: Sequence[Clip], val_fraction: float, test_fraction: float, seed: int) -> Split:
    indices = np.arange(len(clips))
    labels = np.array([c.emotion for c in clips])
    rest, test = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest], random_state=seed
    )
    return Split(train=sorted(train.tolist()), val=sorted(val.tolist()), test=sorted(test.tolist()))
