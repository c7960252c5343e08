"""The readers, the speaker folds and cross-validation on the real recordings in `../shared/data`.

Emo-DB (10 speakers, 535 clips) and SAVEE (4 speakers, 480 clips) as distributed; the counts asserted
here are those of the data README. Skipped, saying why, where the folder is absent
(`EMOTION_SHARED_DATA` points elsewhere).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pytest

from emotion.data.corpora import EMOTIONS, read_corpus
from emotion.data.splits import LeaveOneSpeakerOut
from emotion.pipeline import train

SHARED_DATA = Path(os.environ.get("EMOTION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
EMODB = SHARED_DATA / "emodb" / "wav"
SAVEE = SHARED_DATA / "savee"

pytestmark = pytest.mark.skipif(not EMODB.is_dir() or not SAVEE.is_dir(), reason=f"no real corpora in {SHARED_DATA}")

#: The data README's table: clips per speaker and Emo-DB emotion letter (W L E A F T N).
EMODB_COUNTS = {
    "03": (14, 5, 1, 4, 7, 7, 11),
    "08": (12, 10, 0, 6, 11, 9, 10),
    "09": (13, 4, 8, 1, 4, 4, 9),
    "10": (10, 8, 1, 8, 4, 3, 4),
    "11": (11, 8, 2, 10, 8, 7, 9),
    "12": (12, 5, 2, 6, 2, 4, 4),
    "13": (12, 10, 8, 7, 10, 5, 9),
    "14": (16, 8, 8, 12, 8, 10, 7),
    "15": (13, 9, 5, 8, 6, 4, 11),
    "16": (14, 14, 11, 7, 11, 9, 5),
}
EMODB_LETTERS = ("angry", "boredom", "disgust", "fear", "happy", "sad", "neutral")


def test_the_emodb_reader_finds_every_speaker_and_emotion_the_corpus_documents() -> None:
    manifest = read_corpus(EMODB, "emodb", classes=[*EMOTIONS, "boredom"])
    assert len(manifest.clips) == 535 and manifest.bad_names == 0
    counts = Counter((c.speaker, c.emotion) for c in manifest.clips)
    for speaker, row in EMODB_COUNTS.items():
        assert tuple(counts[speaker, emotion] for emotion in EMODB_LETTERS) == row, speaker


def test_emodb_boredom_is_dropped_and_counted_unless_asked_for() -> None:
    manifest = read_corpus(EMODB, "emodb")
    assert len(manifest.clips) == 535 - 81
    assert manifest.dropped_classes == {"boredom": 81}


def test_the_savee_reader_finds_four_speakers_with_fifteen_clips_per_emotion_and_thirty_neutral() -> None:
    manifest = read_corpus(SAVEE, "savee", classes=[*EMOTIONS, "surprise"])
    assert len(manifest.clips) == 480 and manifest.bad_names == 0
    counts = Counter((c.speaker, c.emotion) for c in manifest.clips)
    for speaker in ("DC", "JE", "JK", "KL"):
        per_emotion = {e: counts[speaker, e] for e in (*EMOTIONS, "surprise")}
        assert per_emotion == {e: 30 if e == "neutral" else 15 for e in per_emotion}, speaker


def test_loso_folds_are_speaker_disjoint_and_test_every_clip_exactly_once() -> None:
    clips = read_corpus(EMODB, "emodb").clips
    n_folds = len({c.speaker for c in clips})
    assert n_folds == 10
    tested: Counter[int] = Counter()
    for fold in range(n_folds):
        split = LeaveOneSpeakerOut(seed=42).split(clips, fold)
        speakers = {p: {clips[i].speaker for i in split.partition(p)} for p in ("train", "val", "test")}
        assert len(speakers["test"]) == 1
        assert not speakers["train"] & speakers["val"]
        assert not (speakers["train"] | speakers["val"]) & speakers["test"]
        assert len(split.train) + len(split.val) + len(split.test) == len(clips)
        tested.update(split.test)
    assert sorted(tested) == list(range(len(clips)))
    assert set(tested.values()) == {1}


def test_a_loso_cross_validation_logs_the_mean_of_its_folds_and_a_pooled_matrix_of_every_clip(make_config) -> None:
    cfg = make_config(
        "data=savee",
        f"data.root={SAVEE}",
        "split=loso",
        "model=cnn1d",
        "features=mel_mean",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger.run_name=savee-loso",
        corpus={},
    )
    results = train(cfg)

    client = mlflow.MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name("emotion").experiment_id
    (parent,) = client.search_runs([experiment], "tags.role = 'cv'")
    folds = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(int(f.data.tags["fold"]) for f in folds) == [0, 1, 2, 3]
    assert all(f.info.status == "FINISHED" for f in [parent, *folds])
    for metric in ("acc", "uar", "f1"):
        fold_values = [f.data.metrics[f"test/{metric}"] for f in folds]
        assert parent.data.metrics[f"test/{metric}_mean"] == pytest.approx(np.mean(fold_values), abs=1e-6)
        assert parent.data.metrics[f"test/{metric}_std"] == pytest.approx(np.std(fold_values), abs=1e-6)
    # one epoch each: a fold's last val/uar is its best, whose mean the CV returns (a sweep's objective)
    assert results["val/uar"] == pytest.approx(np.mean([f.data.metrics["val/uar"] for f in folds]), abs=1e-6)

    artifacts = Path(
        mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, tracking_uri=cfg.logger.tracking_uri)
    )
    matrix = json.loads((artifacts / "confusion_matrix.json").read_text())
    assert np.sum(matrix["counts"]) == 420  # every six-class SAVEE clip, tested once
    records = json.loads((artifacts / "cv_folds.json").read_text())
    assert [r["speakers"]["test"] for r in records] == [["DC"], ["JE"], ["JK"], ["KL"]]
    assert {"confusion_matrix.png", "cv_folds.png", "classification_report.txt"} <= {
        p.name for p in artifacts.iterdir()
    }
