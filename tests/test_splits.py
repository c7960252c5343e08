"""Speaker-independent, class-stratified, seeded splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from emotion.data.corpora import Clip, read_corpus
from emotion.data.splits import Split, check_no_leakage, split_manifest
from emotion.data.synthetic import SyntheticCorpusConfig, clip_specs
from emotion.errors import DataError


def manifest(n_speakers: int = 24, n_sentences: int = 12) -> list[Clip]:
    """A manifest of the default synthetic corpus's layout, without audio (splits only read labels)."""
    specs = clip_specs(SyntheticCorpusConfig(n_speakers=n_speakers, n_sentences=n_sentences))
    return [Clip(f"{s}_{t}_{e}_{lv}.wav", str(s), e, t, lv) for s, t, e, lv in specs]


def speakers(clips: list[Clip], indices: list[int]) -> set[str]:
    return {clips[i].speaker for i in indices}


def test_no_speaker_crosses_partitions() -> None:
    clips = manifest()
    split = split_manifest(clips, "speaker", seed=3)
    train, val, test = (speakers(clips, split.partition(p)) for p in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert len(train | val | test) == 24
    assert sorted(split.train + split.val + split.test) == list(range(len(clips)))


def test_speaker_split_sizes_follow_the_fractions_and_keep_every_class() -> None:
    clips = manifest()
    split = split_manifest(clips, "speaker", val_fraction=0.167, test_fraction=0.167, seed=0)
    assert [len(speakers(clips, split.partition(p))) for p in ("train", "val", "test")] == [16, 4, 4]
    for partition in ("train", "val", "test"):
        counts = Counter(clips[i].emotion for i in split.partition(partition))
        assert len(counts) == 6 and len(set(counts.values())) == 1, counts


def test_split_is_seeded() -> None:
    clips = manifest()
    assert split_manifest(clips, seed=1) == split_manifest(clips, seed=1)
    assert split_manifest(clips, seed=1) != split_manifest(clips, seed=2)


def test_clip_split_is_the_reports_protocol_and_shares_speakers() -> None:
    clips = manifest()
    split = split_manifest(clips, "clip", seed=0)
    assert speakers(clips, split.train) & speakers(clips, split.test)
    assert abs(len(split.test) / len(clips) - 0.167) < 0.01


def test_a_speaker_in_two_partitions_is_caught(tiny_corpus: Path) -> None:
    clips = read_corpus(tiny_corpus).clips
    leaky = Split(train=[0, 1], val=[], test=[2])  # clips 0-2 are all speaker 1001
    with pytest.raises(DataError, match="leak: speaker 1001 is in both the train and test partitions"):
        check_no_leakage(clips, leaky)


def test_too_few_speakers_for_a_speaker_split_is_an_error() -> None:
    with pytest.raises(DataError, match="at least 3 speakers"):
        split_manifest(manifest(n_speakers=2, n_sentences=1), "speaker")
