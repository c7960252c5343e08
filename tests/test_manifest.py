"""A corpus of one's own, described by a manifest (data=manifest): rows, bad rows, and a LOSO study in one command.

The last test describes SAVEE in `../shared/data` by a CSV manifest in the style of IEMOCAP's label files
(codes of its own, an extra column, paths relative to the manifest) and cross-validates it with `split=loso`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf

from emotion.data.corpora import read_corpus
from emotion.errors import ConfigError, DataError
from tests.test_real_corpora import SAVEE

CODES = {"ang": "angry", "dis": "disgust", "fea": "fear", "hap": "happy", "neu": "neutral", "sad": "sad"}


def write_clip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.sin(np.linspace(0, 400, 8000))).astype(np.float32), 16000)
    return path


def write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("path", "label", "speaker")) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_rows_give_clips_with_paths_relative_to_the_manifest_and_labels_of_the_readers_vocabulary(
    tmp_path: Path,
) -> None:
    write_clip(tmp_path / "audio" / "a.wav")
    write_clip(tmp_path / "audio" / "b.wav")
    absolute = write_clip(tmp_path / "elsewhere" / "c.wav")
    manifest = write_csv(
        tmp_path / "labels.csv",
        [
            {"path": "audio/a.wav", "label": "ang", "speaker": "Ses01F", "session": "1"},
            {"path": "audio/b.wav", "label": "Happy", "speaker": "Ses01M", "session": "1"},
            {"path": str(absolute), "label": "exc", "speaker": "Ses02F", "session": "2"},
        ],
        ("path", "label", "speaker", "session"),
    )
    clips = read_corpus(manifest, "manifest", options={"labels": {"ang": "angry", "exc": "happy"}}).clips
    assert [(Path(c.path), c.speaker, c.emotion) for c in clips] == [
        (tmp_path / "audio" / "a.wav", "Ses01F", "angry"),
        (tmp_path / "audio" / "b.wav", "Ses01M", "happy"),
        (absolute, "Ses02F", "happy"),
    ]


def test_each_bad_row_is_logged_with_its_line_number_and_skipped(tmp_path: Path, caplog) -> None:
    write_clip(tmp_path / "a.wav")
    manifest = write_csv(
        tmp_path / "labels.csv",
        [
            {"path": "a.wav", "label": "neutral", "speaker": "s1"},
            {"path": "missing.wav", "label": "neutral", "speaker": "s1"},
            {"path": "a.wav", "label": "xxx", "speaker": "s2"},
            {"path": "a.wav", "label": "sad", "speaker": ""},
        ],
    )
    with caplog.at_level(logging.WARNING):
        read = read_corpus(manifest, "manifest")
    assert len(read.clips) == 1 and read.bad_names == 3
    assert f"labels.csv line 3: no audio file at {tmp_path / 'missing.wav'}" in caplog.text
    assert "labels.csv line 4: unknown label 'xxx'" in caplog.text
    assert "labels.csv line 5: no speaker" in caplog.text


def test_the_error_policy_stops_at_the_first_bad_row_naming_its_line(tmp_path: Path) -> None:
    write_clip(tmp_path / "a.wav")
    rows = [{"path": "a.wav", "label": "sad", "speaker": "s1"}, {"path": "a.wav", "label": "bored", "speaker": "s1"}]
    with pytest.raises(DataError, match=r"^labels.csv line 3: unknown label 'bored'"):
        read_corpus(write_csv(tmp_path / "labels.csv", rows), "manifest", options={"on_bad_row": "error"})


def test_json_and_json_lines_manifests_are_read_alike(tmp_path: Path, caplog) -> None:
    write_clip(tmp_path / "a.wav")
    rows = [{"path": "a.wav", "label": "fear", "speaker": "s1"}, {"path": "a.wav", "label": "fear"}]
    (tmp_path / "m.json").write_text(json.dumps(rows))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with caplog.at_level(logging.WARNING):
        for name in ("m.json", "m.jsonl"):
            assert [c.emotion for c in read_corpus(tmp_path / name, "manifest").clips] == ["fear"]
    assert "m.json entry 2: no speaker" in caplog.text and "m.jsonl line 2: no speaker" in caplog.text


def test_a_manifest_without_a_required_column_or_mapping_to_unknown_classes_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    manifest = write_csv(tmp_path / "m.csv", [{"path": "a.wav", "label": "sad"}], ("path", "label"))
    with pytest.raises(DataError, match=r"m.csv has no column speaker \(its header: \['path', 'label'\]\)"):
        read_corpus(manifest, "manifest")
    with pytest.raises(ConfigError, match=r"maps to unknown classes \{'exc': 'excited'\}"):
        read_corpus(manifest, "manifest", options={"labels": {"exc": "excited"}})


@pytest.mark.skipif(not SAVEE.is_dir(), reason=f"no SAVEE in {SAVEE}")
def test_a_corpus_described_by_a_csv_manifest_is_cross_validated_leaving_one_speaker_out_in_one_command(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "my_corpus"
    folder.mkdir()
    letters = {"a": "ang", "d": "dis", "f": "fea", "h": "hap", "n": "neu", "sa": "sad"}
    rows = []
    for wav in sorted(SAVEE.glob("*.wav")):  # DC_a01.wav ...
        speaker, _, take = wav.stem.partition("_")
        code = take.rstrip("0123456789")
        if code in letters:
            rows.append(
                {"path": os.path.relpath(wav, folder), "label": letters[code], "speaker": speaker, "take": take}
            )
    rows.insert(7, {"path": "gone.wav", "label": "neu", "speaker": "DC", "take": "n99"})  # a bad row, line 9
    manifest = write_csv(folder / "labels.csv", rows, ("path", "label", "speaker", "take"))
    store = f"sqlite:///{tmp_path}/mlruns.db"

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion.cli.train",
            "data=manifest",
            f"data.root={manifest}",
            "data.reader_options.labels={ang:angry,dis:disgust,fea:fear,hap:happy,neu:neutral,sad:sad}",
            "split=loso",
            "model=cnn1d",
            "features=mel_mean",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.enable_progress_bar=false",
            "logger.log_model=false",
        ],
        cwd=tmp_path,
        env={**os.environ, "EMOTION_CACHE_DIR": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": store},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # said once, though every fold reads the manifest
    assert (result.stdout + result.stderr).count(f"labels.csv line 9: no audio file at {folder / 'gone.wav'}") == 1

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("emotion").experiment_id
    (parent,) = client.search_runs([experiment], "tags.role = 'cv'")
    assert parent.data.tags["data"] == "manifest" and parent.data.tags["cv"] == "loso"
    folds = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(f.data.params["split.test_speakers"] for f in folds) == ["DC", "JE", "JK", "KL"]
    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, tracking_uri=store))
    assert (
        np.sum(json.loads((artifacts / "confusion_matrix.json").read_text())["counts"]) == 420
    )  # every six-class clip, tested once

    # emotion-runs sets the cross-validation beside any other run of its corpus: mean ± std, pooled, folds
    compared = subprocess.run(
        [sys.executable, "-m", "emotion.cli.runs", "--tracking-uri", store], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert compared[0] == "manifest (1 runs)"
    metrics = parent.data.metrics
    mean_std = f"{metrics['test/uar_mean']:.4f} ± {metrics['test/uar_std']:.4f}"
    assert mean_std in compared[3] and f"{metrics['test/uar_pooled']:.4f}" in compared[3]
    assert "loso, 4 folds" in compared[3] and parent.info.run_id in compared[3]


def test_emotion_train_asks_for_the_manifest_file_in_one_line(tmp_path: Path) -> None:
    for overrides, says in (
        (
            ["data=manifest"],
            "error: data=manifest needs data.root=PATH: the manifest file (CSV, TSV, JSON or JSON lines)",
        ),
        (
            ["data=manifest", f"data.root={tmp_path / 'nope.csv'}"],
            f"error: data.root={tmp_path / 'nope.csv'}: no such manifest file",
        ),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "emotion.cli.train", *overrides], cwd=tmp_path, capture_output=True, text=True
        )
        assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (1, says)
