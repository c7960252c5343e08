"""Readers of the corpora users bring, tested on small trees that follow each corpus's naming scheme.

Each tree is made of short generated WAV files named and nested as the corpus unpacks, irregularities of
real distributions included; `test_real_corpora.py` reads the real Emo-DB and SAVEE in `../shared/data`.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotion.data.corpora import EMOTIONS, read_corpus
from emotion.data.datamodule import EmotionDataModule
from emotion.data.features import LogMel, Spectral
from emotion.errors import ConfigError, DataError


def write_tree(root: Path, relative_paths: list[str]) -> Path:
    tone = (0.1 * np.sin(np.linspace(0, 400, 8000))).astype(np.float32)
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone, 16000)
    return root


def ravdess_tree(root: Path) -> Path:
    names = [
        f"Actor_{actor:02d}/03-01-{emotion:02d}-{1 if emotion == 1 else intensity:02d}-0{statement}-01-{actor:02d}.wav"
        for actor in (1, 2, 13)
        for emotion in range(1, 9)
        for intensity in (1, 2)
        for statement in (1, 2)
        if not (emotion == 1 and intensity == 2)
    ]
    return write_tree(root, names)


def test_ravdess_actor_is_the_speaker_and_calm_and_surprise_are_extra_classes(tmp_path: Path) -> None:
    manifest = read_corpus(ravdess_tree(tmp_path), "ravdess")
    assert {c.speaker for c in manifest.clips} == {"actor01", "actor02", "actor13"}
    assert Counter(c.emotion for c in manifest.clips) == {
        "neutral": 6,
        "angry": 12,
        "disgust": 12,
        "fear": 12,
        "happy": 12,
        "sad": 12,
    }
    assert manifest.dropped_classes == {"calm": 12, "surprise": 12}
    angry = next(c for c in manifest.clips if c.path.endswith("03-01-05-02-01-01-13.wav"))
    assert (angry.speaker, angry.emotion, angry.intensity, angry.sentence) == (
        "actor13",
        "angry",
        "strong",
        "statement01",
    )


def test_extra_classes_are_kept_when_added_to_the_class_set(tmp_path: Path) -> None:
    manifest = read_corpus(ravdess_tree(tmp_path), "ravdess", classes=(*EMOTIONS, "calm", "surprise"))
    assert Counter(c.emotion for c in manifest.clips)["surprise"] == 12
    assert manifest.dropped_classes == {}


def test_tess_speakers_are_the_two_actresses(tmp_path: Path) -> None:
    words = ("back", "bar", "base")
    codes = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")
    names = [f"{s}_{code}/{s}_{w}_{code}.wav" for s in ("OAF", "YAF") for code in codes for w in words]
    manifest = read_corpus(write_tree(tmp_path, names), "tess")
    assert Counter(c.speaker for c in manifest.clips) == {"OAF": 18, "YAF": 18}
    assert manifest.dropped_classes == {"surprise": 6}
    assert {c.sentence for c in manifest.clips} == set(words)


def test_savee_reads_both_the_folder_and_the_flat_layout(tmp_path: Path) -> None:
    codes = {"a": 2, "d": 2, "f": 2, "h": 2, "n": 4, "sa": 2, "su": 2}
    nested = [f"AudioData/{s}/{c}{i:02d}.wav" for s in ("DC", "JE") for c, n in codes.items() for i in range(1, n + 1)]
    flat = [f"ALL/{s}_{c}{i:02d}.wav" for s in ("JK", "KL") for c, n in codes.items() for i in range(1, n + 1)]
    manifest = read_corpus(write_tree(tmp_path, nested + flat), "savee")
    assert Counter(c.speaker for c in manifest.clips) == {"DC": 14, "JE": 14, "JK": 14, "KL": 14}
    assert Counter(c.emotion for c in manifest.clips)["neutral"] == 16
    assert manifest.dropped_classes == {"surprise": 8}


def test_emodb_speaker_and_german_emotion_letters(tmp_path: Path) -> None:
    letters = {"W": "angry", "E": "disgust", "A": "fear", "F": "happy", "N": "neutral", "T": "sad", "L": "boredom"}
    names = [f"wav/{s}a0{t}{letter}a.wav" for s in ("03", "08", "16") for letter in letters for t in (1, 2)]
    manifest = read_corpus(write_tree(tmp_path, names), "emodb")
    assert {c.speaker for c in manifest.clips} == {"03", "08", "16"}
    assert Counter(c.emotion for c in manifest.clips) == dict.fromkeys(EMOTIONS, 6)
    assert manifest.dropped_classes == {"boredom": 6}


def test_a_tess_file_whose_name_has_a_typo_is_labelled_by_its_folder(tmp_path: Path) -> None:
    names = [
        "TESS/OAF_neutral/OA_bite_neutral.wav",  # the distributed corpus's prefix typo
        "TESS/YAF_pleasant_surprised/YAF_back_ps.wav",
        "TESS/OAF_Fear/OAF_beg_fear.wav",  # folder case differs
        "TESS/YAF_angry/yaf_bath_ANGRY.WAV",  # file case differs
    ]
    manifest = read_corpus(write_tree(tmp_path, names), "tess", classes=(*EMOTIONS, "surprise"))
    labels = {Path(c.path).name: (c.speaker, c.emotion, c.sentence) for c in manifest.clips}
    assert labels == {
        "OA_bite_neutral.wav": ("OAF", "neutral", "bite"),
        "YAF_back_ps.wav": ("YAF", "surprise", "back"),
        "OAF_beg_fear.wav": ("OAF", "fear", "beg"),
        "yaf_bath_ANGRY.WAV": ("YAF", "angry", "bath"),
    }


def test_names_are_read_whatever_their_case(tmp_path: Path) -> None:
    savee = read_corpus(write_tree(tmp_path / "savee", ["dc_A01.wav", "Je_SA02.WAV", "KL_su03.wav"]), "savee")
    assert sorted((c.speaker, c.emotion) for c in savee.clips) == [("DC", "angry"), ("JE", "sad")]
    emodb = read_corpus(write_tree(tmp_path / "emodb", ["03A01FA.WAV", "16b10wb.wav"]), "emodb")
    assert sorted((c.speaker, c.emotion, c.sentence) for c in emodb.clips) == [
        ("03", "happy", "a01"),
        ("16", "angry", "b10"),
    ]


def test_each_unreadable_file_is_skipped_and_named_in_the_log(tmp_path: Path, caplog) -> None:
    write_tree(tmp_path, ["03a01Fa.wav", "notes/03a01Fa copy.wav", "take2_03a01Wa.wav"])
    with caplog.at_level(logging.WARNING, logger="emotion.data.corpora"):
        manifest = read_corpus(tmp_path, "emodb")
    assert len(manifest.clips) == 1 and manifest.bad_names == 2
    assert "03a01Fa copy.wav" in caplog.text and "take2_03a01Wa.wav" in caplog.text


@pytest.mark.parametrize(
    ("reader", "name", "reason"),
    [
        ("ravdess", "03-01-09-01-01-01-01.wav", "unknown RAVDESS emotion code '09'"),
        ("tess", "OAF_back_bored.wav", "unknown TESS emotion code 'bored'"),
        ("savee", "XX_a01.wav", "name outside the SAVEE scheme"),
        ("emodb", "03a01Xa.wav", "unknown EmoDB emotion code 'X'"),
        ("crema_d", "1001_DFA_ANG_ZZ.wav", "unknown CREMA-D intensity code 'ZZ'"),
    ],
)
def test_unknown_label_codes_are_named(tmp_path: Path, reader: str, name: str, reason: str) -> None:
    write_tree(tmp_path, [name])
    with pytest.raises(DataError, match=f"{reason}.*{name}"):
        read_corpus(tmp_path, reader, on_bad_name="error")


def test_a_data_root_that_is_a_file_is_named(tmp_path: Path) -> None:
    write_tree(tmp_path, ["1001_DFA_ANG_XX.wav"])
    with pytest.raises(DataError, match="data root is not a folder"):
        read_corpus(tmp_path / "1001_DFA_ANG_XX.wav")


def test_unknown_reader_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown corpus reader 'iemocap'"):
        read_corpus(tmp_path, "iemocap")


def test_a_class_outside_the_vocabulary_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown class\(es\) \['anger'\] in data.classes"):
        EmotionDataModule(LogMel(Spectral()), tmp_path, root=str(tmp_path), classes=("anger", "sad"))
