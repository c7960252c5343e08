"""Reading a CREMA-D-layout folder into a manifest, and the errors bad folders and names give."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from emotion.data.corpora import read_corpus
from emotion.errors import DataError


def test_manifest_has_path_speaker_emotion_sentence_and_intensity(tiny_corpus: Path) -> None:
    clips = read_corpus(tiny_corpus).clips
    clip = next(c for c in clips if Path(c.path).name == "1001_IEO_ANG_MD.wav")
    assert clip.as_dict() == {
        "path": str(tiny_corpus / "1001_IEO_ANG_MD.wav"),
        "speaker": "1001",
        "emotion": "angry",
        "sentence": "IEO",
        "intensity": "MD",
        "copy": 0,
        "corpus": "",
    }


def test_reads_nested_folders_as_a_corpus_unpacks(tiny_corpus: Path, tmp_path: Path) -> None:
    nested = tmp_path / "CREMA-D" / "AudioWAV"
    shutil.copytree(tiny_corpus, nested)
    assert len(read_corpus(tmp_path).clips) == 72


def test_classes_outside_the_class_set_are_dropped(tiny_corpus: Path) -> None:
    clips = read_corpus(tiny_corpus, classes=("angry", "sad")).clips
    assert {c.emotion for c in clips} == {"angry", "sad"}
    assert len(clips) == 24


@pytest.fixture
def corpus_with_stray_file(tiny_corpus: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_corpus, tmp_path / "corpus")
    shutil.copy(tiny_corpus / "1001_IEO_ANG_MD.wav", tmp_path / "corpus" / "recording_03.wav")
    shutil.copy(tiny_corpus / "1001_IEO_ANG_MD.wav", tmp_path / "corpus" / "1001_IEO_XYZ_HI.wav")
    return tmp_path / "corpus"


def test_names_outside_the_scheme_are_skipped_each_named_and_counted(
    corpus_with_stray_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        manifest = read_corpus(corpus_with_stray_file, on_bad_name="skip")
    assert len(manifest.clips) == 72 and manifest.bad_names == 2
    assert "skipped 2 file(s) whose names the crema_d reader could not read" in caplog.text
    assert "1001_IEO_XYZ_HI.wav: unknown CREMA-D emotion code 'XYZ'" in caplog.text


def test_names_outside_the_scheme_stop_the_read_under_the_error_policy(corpus_with_stray_file: Path) -> None:
    with pytest.raises(DataError, match=r"unknown CREMA-D emotion code 'XYZ': .*1001_IEO_XYZ_HI\.wav"):
        read_corpus(corpus_with_stray_file, on_bad_name="error")


def test_the_wrong_reader_is_one_line_saying_so_with_no_warning_per_file(
    tiny_corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(DataError) as refused:
        read_corpus(tiny_corpus, reader="savee")
    assert str(refused.value).startswith("the savee reader could read none of the 72 file names under")
    assert "is data=savee the corpus in that folder?" in str(refused.value)
    assert caplog.records == []


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"data folder does not exist: {tmp_path / 'nowhere'}"):
        read_corpus(tmp_path / "nowhere")


def test_empty_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(DataError, match=f"holds no audio files.*{tmp_path}"):
        read_corpus(tmp_path)
