"""How clips are split into train, validation and test partitions, and folded: the `split` config group.

One concept for one split and for a cross-validation's folds, on scikit-learn's group splitters:

- `speaker` (`SpeakerHoldOut`, the default): about `test_fraction` of the speakers test, the rest train
  and validate; test scores measure how a model does on voices it never heard.
- `kfold` (`SpeakerKFold`): `n_folds` folds of speakers (`StratifiedGroupKFold`), each tested in turn.
- `loso` (`LeaveOneSpeakerOut`): one fold per speaker (`LeaveOneGroupOut`), in sorted order.
- `loco` (`LeaveOneCorpusOut`, `data=mix`): one fold per corpus (`LeaveOneGroupOut`), in sorted order.
- `clip` (`ClipHoldOut`): clips at random, as the report did; optimistic, because a speaker's other
  clips sit in training (such runs are tagged leaky).

A split with folds cross-validates: one run per fold, as children of one parent run
(`emotion.pipeline.crossval`); `fold` names one fold to run alone, `folds` a subset. In every fold the
validation partition is made of training speakers (class- and corpus-stratified): the test speakers
never choose a checkpoint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, train_test_split

from emotion.data.corpora import Clip
from emotion.errors import ConfigError, DataError

PARTITIONS = ("train", "val", "test")


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


class Splitter:
    """A split of a corpus's clips into train, validation and test partitions: one, or one per fold.

    `val_fraction`: about that share of the clips' speakers validate; `seed`: the stratified shuffles' seed.
    """

    #: The split's name in run tags (`split`) and configs (`split=NAME`).
    name: str
    #: Whether its partitions never share a speaker (checked for each split).
    speaker_independent = True

    def __init__(self, val_fraction: float = 0.167, seed: int = 0) -> None:
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)

    def n_folds(self, clips: Sequence[Clip]) -> int:
        """How many folds the clips make (1: a single split)."""
        return 1

    def folds_to_run(self, clips: Sequence[Clip]) -> list[int]:
        """The folds a run (one fold) or a cross-validation (several) trains."""
        return [0]

    @property
    def cross_validates(self) -> bool:
        """True if a run of this split is a cross-validation (every fold, or a subset, as child runs)."""
        return False

    def split(self, clips: Sequence[Clip], fold: int = 0) -> Split:
        """The partitions of fold `fold`; DataError if the clips cannot be split so, or a speaker would leak."""
        split = self._split(clips, fold)
        if self.speaker_independent:
            check_no_leakage(clips, split)
        return split

    def _split(self, clips: Sequence[Clip], fold: int) -> Split:
        raise NotImplementedError

    def _with_validation(self, clips: Sequence[Clip], is_test: np.ndarray, val_share: float) -> Split:
        """The `is_test` clips test; about `val_share` of the other clips' speakers validate, the rest train."""
        indices = np.arange(len(clips))
        train, val = hold_out_speakers(clips, indices[~is_test], val_share, self.seed + 1)
        return Split(train=sorted(train.tolist()), val=sorted(val.tolist()), test=indices[is_test].tolist())


class SpeakerHoldOut(Splitter):
    """About `test_fraction` of the speakers test, `val_fraction` validate, the rest train."""

    name = "speaker"

    def __init__(self, val_fraction: float = 0.167, test_fraction: float = 0.167, seed: int = 0) -> None:
        super().__init__(val_fraction, seed)
        self.test_fraction = float(test_fraction)

    def _split(self, clips: Sequence[Clip], fold: int) -> Split:
        require_speakers(clips, 3, "a speaker-independent split")
        _, test = hold_out_speakers(clips, np.arange(len(clips)), self.test_fraction, self.seed)
        is_test = np.isin(np.arange(len(clips)), test)
        return self._with_validation(clips, is_test, self.val_fraction / (1 - self.test_fraction))


class FoldedSplitter(Splitter):
    """A split with folds: a run cross-validates over them, unless `fold` names the one to run."""

    def __init__(
        self, val_fraction: float = 0.167, seed: int = 0, fold: int | None = None, folds: Sequence[int] | None = None
    ) -> None:
        super().__init__(val_fraction, seed)
        self.fold = fold
        self.folds = None if folds is None else [int(f) for f in folds]

    @property
    def cross_validates(self) -> bool:
        return self.fold is None

    def folds_to_run(self, clips: Sequence[Clip]) -> list[int]:
        """`fold` alone, or every fold (or the subset `folds`, a cheaper estimate in sweeps); checked."""
        n_folds = self.n_folds(clips)
        if self.fold is not None:
            chosen, given = [int(self.fold)], f"split.fold={self.fold}"
        else:
            chosen = list(range(n_folds)) if self.folds is None else self.folds
            given = f"split.folds={chosen}"
        if not chosen or any(not 0 <= f < n_folds for f in chosen):
            raise ConfigError(f"{given} must be within 0..{n_folds - 1}")
        return chosen


class SpeakerKFold(FoldedSplitter):
    """`n_folds` class-stratified folds of speakers, each tested in turn."""

    name = "kfold"

    def __init__(
        self,
        n_folds: int = 5,
        val_fraction: float = 0.167,
        seed: int = 0,
        fold: int | None = None,
        folds: Sequence[int] | None = None,
    ) -> None:
        super().__init__(val_fraction, seed, fold, folds)
        self.folds_count = int(n_folds)

    def n_folds(self, clips: Sequence[Clip]) -> int:
        return self.folds_count

    def _split(self, clips: Sequence[Clip], fold: int) -> Split:
        require_speakers(clips, 3, "a speaker-independent split")
        if not 0 <= fold < self.folds_count:
            last = self.folds_count - 1
            raise DataError(f"split.fold={fold} is outside 0..{last} (split.n_folds={self.folds_count})")
        _, test = hold_out_speakers(clips, np.arange(len(clips)), 1 / self.folds_count, self.seed, fold)
        is_test = np.isin(np.arange(len(clips)), test)
        return self._with_validation(clips, is_test, self.val_fraction / (1 - 1 / self.folds_count))


class LeaveOneGroupOutSplitter(FoldedSplitter):
    """One fold per group of clips (sorted), tested on that group alone."""

    what = "speaker"

    def groups(self, clips: Sequence[Clip]) -> np.ndarray:
        raise NotImplementedError

    def n_folds(self, clips: Sequence[Clip]) -> int:
        return len(set(self.groups(clips).tolist()))

    def _test_fold(self, clips: Sequence[Clip], fold: int) -> np.ndarray:
        """The clips of the `fold`-th group (sorted), as booleans."""
        groups = self.groups(clips)
        if not 0 <= fold < self.n_folds(clips):
            names = sorted(set(groups.tolist()))
            raise DataError(f"split.fold={fold} is outside 0..{len(names) - 1} (one fold per {self.what}: {names})")
        _, test = list(LeaveOneGroupOut().split(np.zeros(len(groups)), groups=groups))[fold]
        return np.isin(np.arange(len(clips)), test)


class LeaveOneSpeakerOut(LeaveOneGroupOutSplitter):
    """Leave one speaker out: each fold tests one speaker; about `val_fraction` of the clips' speakers validate."""

    name = "loso"

    def groups(self, clips: Sequence[Clip]) -> np.ndarray:
        return np.array([c.speaker for c in clips])

    def _split(self, clips: Sequence[Clip], fold: int) -> Split:
        require_speakers(clips, 3, "leave-one-speaker-out")
        n_speakers = self.n_folds(clips)
        return self._with_validation(clips, self._test_fold(clips, fold), self.val_fraction / (1 - 1 / n_speakers))


class LeaveOneCorpusOut(LeaveOneGroupOutSplitter):
    """Leave one corpus out (`data=mix`): each fold tests one corpus; speakers of the others train and validate."""

    name = "loco"
    what = "corpus"

    def groups(self, clips: Sequence[Clip]) -> np.ndarray:
        return np.array([c.corpus for c in clips])

    def _split(self, clips: Sequence[Clip], fold: int) -> Split:
        corpora = sorted({c.corpus for c in clips})
        if len(corpora) < 2:
            raise DataError(f"leave-one-corpus-out needs at least 2 corpora (data=mix), got {corpora}")
        return self._with_validation(clips, self._test_fold(clips, fold), self.val_fraction)


class ClipHoldOut(Splitter):
    """The report's protocol: clips split at random (class-stratified); a speaker's clips land in every partition."""

    name = "clip"
    speaker_independent = False

    def __init__(self, val_fraction: float = 0.167, test_fraction: float = 0.167, seed: int = 0) -> None:
        super().__init__(val_fraction, seed)
        self.test_fraction = float(test_fraction)

    def _split(self, clips: Sequence[Clip], fold: int) -> Split:
        indices = np.arange(len(clips))
        labels = np.array([c.emotion for c in clips])
        rest, test = train_test_split(indices, test_size=self.test_fraction, stratify=labels, random_state=self.seed)
        train, val = train_test_split(
            rest,
            test_size=self.val_fraction / (1 - self.test_fraction),
            stratify=labels[rest],
            random_state=self.seed,
        )
        return Split(train=sorted(train.tolist()), val=sorted(val.tolist()), test=sorted(test.tolist()))


def require_speakers(clips: Sequence[Clip], least: int, what: str) -> None:
    speakers = {c.speaker for c in clips}
    if len(speakers) < least:
        raise DataError(f"{what} needs at least {least} speakers, the corpus has {len(speakers)}")


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


def hold_out_speakers(
    clips: Sequence[Clip], indices: np.ndarray, fraction: float, seed: int, fold: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about `fraction` of the speakers of `indices` (fold `fold` of `StratifiedGroupKFold`), keeping the
    proportions of each corpus's classes."""
    groups = np.array([clips[i].speaker for i in indices])
    n_splits = min(max(2, round(1 / fraction)), len(set(groups)))
    labels = np.array([f"{clips[i].corpus}/{clips[i].emotion}" for i in indices])
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, held = list(folds.split(indices, labels, groups))[fold]
    return indices[keep], indices[held]
