"""Partitioning a manifest into train, validation and test sets.

`speaker` (the default) keeps every speaker in one partition, so test scores
measure how a model does on voices it never heard. `kfold` does the same with
fold `fold` of `n_folds` speaker folds as the test set, and `loso` (leave one
speaker out) tests on the `fold`-th speaker in sorted order, for small corpora
whose scores should be averaged over folds (see `emotion.pipeline.folds`). In every
fold the validation partition is made of training speakers: the test speakers
never choose a checkpoint. `clip` splits clips at random, as the report did; its
scores are optimistic because a speaker's other clips sit in training. With several
corpora (`data=mix`), partitions are stratified by corpus and class, and `loco` (leave
one corpus out) tests on the `fold`-th corpus in sorted order.
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
SplitStrategy = Literal["speaker", "kfold", "loso", "loco", "clip"]
#: Strategies whose partitions must not share a speaker or a source clip.
SPEAKER_INDEPENDENT = ("speaker", "kfold", "loso", "loco")


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
    n_folds: int = 5,
    fold: int = 0,
) -> Split:
    """Split `clips` into train/val/test, class-stratified and seeded; speaker-independent strategies are checked."""
    if strategy == "speaker":
        split = _split_by_speaker(clips, val_fraction, test_fraction, seed)
    elif strategy == "kfold":
        if not 0 <= fold < n_folds:
            raise DataError(f"data.split.fold={fold} is outside 0..{n_folds - 1} (data.split.n_folds={n_folds})")
        split = _split_by_speaker(clips, val_fraction, 1 / n_folds, seed, fold=fold)
    elif strategy == "loso":
        split = _leave_one_speaker_out(clips, val_fraction, seed, fold)
    elif strategy == "loco":
        split = _leave_one_corpus_out(clips, val_fraction, seed, fold)
    elif strategy == "clip":
        return _split_by_clip(clips, val_fraction, test_fraction, seed)
    else:
        raise DataError(f"unknown split strategy {strategy!r}: choose 'speaker', 'kfold', 'loso', 'loco' or 'clip'")
    check_no_leakage(clips, split)
    return split


def check_no_leakage(clips: Sequence[Clip], split: Split) -> None:
    """DataError if a speaker, or a source clip (its augmented copies included), is in two partitions."""
    for attribute, what in (("speaker", "speaker"), ("path", "source clip")):
        owners: dict[str, str] = {}
        for name in PARTITIONS:
            for i in split.partition(name):
                value = getattr(clips[i], attribute)
                first = owners.setdefault(value, name)
                if first != name:
                    raise DataError(f"leak: {what} {value} is in both the {first} and {name} partitions")


def _split_by_speaker(
    clips: Sequence[Clip], val_fraction: float, test_fraction: float, seed: int, fold: int = 0
) -> Split:
    speakers = sorted({c.speaker for c in clips})
    if len(speakers) < 3:
        raise DataError(f"a speaker-independent split needs at least 3 speakers, the corpus has {len(speakers)}")
    indices = np.arange(len(clips))
    rest, test = _hold_out_speakers(clips, indices, test_fraction, seed, fold)
    train, val = _hold_out_speakers(clips, rest, val_fraction / (1 - test_fraction), seed + 1)
    return Split(train=sorted(train.tolist()), val=sorted(val.tolist()), test=sorted(test.tolist()))


def _leave_one_speaker_out(clips: Sequence[Clip], val_fraction: float, seed: int, fold: int) -> Split:
    """The `fold`-th speaker (sorted) is the test set; about `val_fraction` of the clips' speakers validate."""
    speakers = sorted({c.speaker for c in clips})
    if len(speakers) < 3:
        raise DataError(f"leave-one-speaker-out needs at least 3 speakers, the corpus has {len(speakers)}")
    if not 0 <= fold < len(speakers):
        raise DataError(f"data.split.fold={fold} is outside 0..{len(speakers) - 1} (one fold per speaker)")
    is_test = np.array([c.speaker == speakers[fold] for c in clips])
    return _test_and_held_out_speakers(clips, is_test, val_fraction / (1 - 1 / len(speakers)), seed)


def _leave_one_corpus_out(clips: Sequence[Clip], val_fraction: float, seed: int, fold: int) -> Split:
    """The `fold`-th corpus (sorted) is the test set; speakers of the other corpora train and validate."""
    corpora = sorted({c.corpus for c in clips})
    if len(corpora) < 2:
        raise DataError(f"leave-one-corpus-out needs at least 2 corpora (data=mix), got {corpora}")
    if not 0 <= fold < len(corpora):
        raise DataError(f"data.split.fold={fold} is outside 0..{len(corpora) - 1} (one fold per corpus: {corpora})")
    is_test = np.array([c.corpus == corpora[fold] for c in clips])
    return _test_and_held_out_speakers(clips, is_test, val_fraction, seed)


def _test_and_held_out_speakers(clips: Sequence[Clip], is_test: np.ndarray, val_fraction: float, seed: int) -> Split:
    """The `is_test` clips test; about `val_fraction` of the other clips' speakers validate, the rest train."""
    indices = np.arange(len(clips))
    train, val = _hold_out_speakers(clips, indices[~is_test], val_fraction, seed + 1)
    return Split(train=sorted(train.tolist()), val=sorted(val.tolist()), test=indices[is_test].tolist())


def _hold_out_speakers(
    clips: Sequence[Clip], indices: np.ndarray, fraction: float, seed: int, fold: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about `fraction` of the speakers of `indices`, keeping the proportions of each corpus's classes
    (fold `fold` of K)."""
    groups = np.array([clips[i].speaker for i in indices])
    n_splits = min(max(2, round(1 / fraction)), len(set(groups)))
    labels = np.array([f"{clips[i].corpus}/{clips[i].emotion}" for i in indices])
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, held = list(folds.split(indices, labels, groups))[fold]
    return indices[keep], indices[held]


def _split_by_clip(clips: Sequence[Clip], val_fraction: float, test_fraction: float, seed: int) -> Split:
    indices = np.arange(len(clips))
    labels = np.array([c.emotion for c in clips])
    rest, test = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest], random_state=seed
    )
    return Split(train=sorted(train.tolist()), val=sorted(val.tolist()), test=sorted(test.tolist()))
