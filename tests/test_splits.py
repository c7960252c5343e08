"""Speaker-independent, class-stratified, seeded splits, and the folds of a cross-validation (`split` group)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from emotion.data.corpora import Clip, read_corpus
from emotion.data.splits import (
    ClipHoldOut,
    LeaveOneSpeakerOut,
    SpeakerHoldOut,
    SpeakerKFold,
    Split,
    check_no_leakage,
)
from emotion.data.synthetic import SyntheticCorpusConfig, clip_specs
from emotion.errors import ConfigError, DataError


def manifest(n_speakers: int = 24, n_sentences: int = 12) -> list[Clip]:
    """A manifest of the default synthetic corpus's layout, without audio (splits only read labels)."""
    specs = clip_specs(SyntheticCorpusConfig(n_speakers=n_speakers, n_sentences=n_sentences))
    return [Clip(f"{s}_{t}_{e}_{lv}.wav", str(s), e, t, lv) for s, t, e, lv in specs]


def speakers(clips: list[Clip], indices: list[int]) -> set[str]:
    return {clips[i].speaker for i in indices}


def test_no_speaker_crosses_partitions() -> None:
    clips = manifest()
    split = SpeakerHoldOut(seed=3).split(clips)
    train, val, test = (speakers(clips, split.partition(p)) for p in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert len(train | val | test) == 24
    assert sorted(split.train + split.val + split.test) == list(range(len(clips)))


def test_speaker_split_sizes_follow_the_fractions_and_keep_every_class() -> None:
    clips = manifest()
    split = SpeakerHoldOut(val_fraction=0.167, test_fraction=0.167, seed=0).split(clips)
    assert [len(speakers(clips, split.partition(p))) for p in ("train", "val", "test")] == [16, 4, 4]
    for partition in ("train", "val", "test"):
        counts = Counter(clips[i].emotion for i in split.partition(partition))
        assert len(counts) == 6 and len(set(counts.values())) == 1, counts


def test_split_is_seeded() -> None:
    clips = manifest()
    assert SpeakerHoldOut(seed=1).split(clips) == SpeakerHoldOut(seed=1).split(clips)
    assert SpeakerHoldOut(seed=1).split(clips) != SpeakerHoldOut(seed=2).split(clips)


def test_clip_split_is_the_reports_protocol_and_shares_speakers() -> None:
    clips = manifest()
    split = ClipHoldOut(seed=0).split(clips)
    assert speakers(clips, split.train) & speakers(clips, split.test)
    assert abs(len(split.test) / len(clips) - 0.167) < 0.01


def test_a_speaker_in_two_partitions_is_caught(tiny_corpus: Path) -> None:
    clips = read_corpus(tiny_corpus).clips
    leaky = Split(train=[0, 1], val=[], test=[2])  # clips 0-2 are all speaker 1001
    with pytest.raises(DataError, match="leak: speaker 1001 is in both the train and test partitions"):
        check_no_leakage(clips, leaky)


def test_too_few_speakers_for_a_speaker_split_is_an_error() -> None:
    with pytest.raises(DataError, match="at least 3 speakers"):
        SpeakerHoldOut().split(manifest(n_speakers=2, n_sentences=1))


def test_leave_one_speaker_out_tests_each_speaker_once_in_sorted_order_validating_on_training_speakers() -> None:
    clips = manifest(n_speakers=6, n_sentences=2)
    splitter = LeaveOneSpeakerOut(seed=0)
    assert splitter.cross_validates and splitter.folds_to_run(clips) == list(range(6))
    tested = []
    for fold in range(6):
        split = splitter.split(clips, fold)
        (speaker,) = speakers(clips, split.test)
        tested.append(speaker)
        assert speakers(clips, split.val) and not speakers(clips, split.val) & speakers(clips, split.train)
    assert tested == sorted({c.speaker for c in clips})


def test_speaker_kfold_tests_every_speaker_exactly_once_over_its_folds() -> None:
    clips = manifest(n_speakers=9, n_sentences=1)
    splitter = SpeakerKFold(n_folds=3, seed=0)
    tested = [speakers(clips, splitter.split(clips, fold).test) for fold in splitter.folds_to_run(clips)]
    assert sum(map(len, tested)) == 9 and set().union(*tested) == {c.speaker for c in clips}


def test_a_named_fold_runs_alone_and_a_subset_of_folds_is_checked() -> None:
    clips = manifest(n_speakers=6, n_sentences=1)
    alone = LeaveOneSpeakerOut(fold=4)
    assert not alone.cross_validates and alone.folds_to_run(clips) == [4]
    assert LeaveOneSpeakerOut(folds=[0, 2]).folds_to_run(clips) == [0, 2]
    with pytest.raises(ConfigError, match=r"split.folds=\[0, 9\] must be within 0..5"):
        LeaveOneSpeakerOut(folds=[0, 9]).folds_to_run(clips)
    with pytest.raises(DataError, match=r"split\.fold=6 is outside 0\.\.5"):
        LeaveOneSpeakerOut().split(clips, 6)
    assert not SpeakerHoldOut().cross_validates and SpeakerHoldOut().folds_to_run(clips) == [0]
