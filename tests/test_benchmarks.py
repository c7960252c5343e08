"""The benchmark command end to end in its quick mode: every benchmark writes its records (timings not checked)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"name", "ours", "peer", "ratio", "unit", "parameters", "machine"}


def test_quick_benchmarks_write_one_record_per_measurement(tmp_path: Path, cache_dir: Path) -> None:
    output = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(output), "--cache-dir", str(cache_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    records = json.loads(output.read_text())
    names = [r["name"] for r in records]
    assert {n.split(":")[0] for n in names} == {"features", "training", "sweep", "scaling"}
    assert sum(n.startswith("training:") for n in names) == 3  # one per architecture
    assert sum(n.startswith("scaling:") for n in names) == 4  # 4 measures at 1x
    for record in records:
        assert set(record) >= FIELDS, record["name"]
        assert math.isfinite(record["ours"]) and record["ours"] >= 0, record["name"]
        assert math.isfinite(record["peer"]) and record["peer"] >= 0, record["name"]
        assert record["machine"]["cores"] >= 1
    features = next(r for r in records if r["name"].startswith("features: cold"))
    assert features["parameters"]["max_abs_difference_db"] < 0.1  # ours and librosa compute the same log-mels
    assert "benchmark" in result.stdout and f"wrote {len(records)} records" in result.stdout


DATA = ROOT.parent / "shared" / "data"
WHISPER = ROOT.parent / "shared" / "models" / "whisper-base"


@pytest.mark.skipif(not (DATA / "emodb" / "wav").is_dir(), reason=f"no Emo-DB under {DATA}")
def test_the_recordings_benchmark_scores_clips_found_split_merged_and_labelled(tmp_path: Path) -> None:
    from benchmarks.recordings import PAUSE, matched, write_recording
    from emotion.data.corpora import read_corpus

    clips = read_corpus(DATA / "emodb" / "wav", "emodb").clips[:4]
    placed = write_recording(clips, tmp_path / "talk.wav", np.random.default_rng(0))
    pauses = [b.start - a.end for a, b in itertools.pairwise(placed)]
    assert all(PAUSE[0] - 1e-3 <= p <= PAUSE[1] + 1e-3 for p in pauses)
    assert sf.info(tmp_path / "talk.wav").duration > placed[-1].end + PAUSE[0] - 1e-3
    one, two, three, four = placed
    middle = (two.start + two.end) / 2
    segments = [  # the first clip 0.1 s late; the second in two pieces; the last two as one segment
        (one.start + 0.1, one.end, "angry"), (two.start, middle, "sad"), (middle, two.end, "sad"),
        (three.start, four.end, "happy"),
    ]  # fmt: skip
    classes = ("angry", "happy", "sad")
    frame = pd.DataFrame({"start": [s for s, _, _ in segments], "end": [e for _, e, _ in segments]})
    for name in classes:
        frame[f"prob_{name}"] = [float(label == name) for *_, label in segments]

    rows = matched(placed, frame, classes)
    assert rows["found"].all()
    assert rows["start_error"][0] == pytest.approx(0.1) and rows["end_error"][0] == pytest.approx(0.0)
    assert list(rows["split"]) == [False, True, False, False]
    assert list(rows["merged"]) == [False, False, True, True]
    assert list(rows["label"]) == ["angry", "sad", "happy", "happy"]
    assert rows["end_error"][2] == pytest.approx(four.end - three.end)  # the merged segment ends with the next clip


@pytest.mark.skipif(not (WHISPER.is_dir() and (DATA / "emodb" / "wav").is_dir()), reason="no Whisper base or Emo-DB")
def test_a_segment_pooled_from_a_window_of_its_own_audio_is_the_clip_encoded_alone() -> None:
    from benchmarks.recordings import pooled_from_windows
    from emotion.data.audio import load_audio
    from emotion.data.features import Spectral
    from emotion.data.ssl import SSLLayers

    features = SSLLayers(Spectral(sample_rate=16_000), encoder=str(WHISPER), whisper_input="cut")
    wave = load_audio(DATA / "emodb" / "wav" / "03a01Fa.wav", 16_000)
    seconds = len(wave) / 16_000
    alone = features.stored_of_clips([wave])
    windowed = pooled_from_windows(features, [wave], [[(0.0, seconds), (seconds / 2, seconds)]])
    torch.testing.assert_close(windowed["ssl_mean"][:1], alone["ssl_mean"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(windowed["ssl_std"][:1], alone["ssl_std"], atol=1e-4, rtol=1e-4)
    assert (windowed["ssl_mean"][1] - alone["ssl_mean"][0]).abs().max() > 1e-2  # its second half alone differs
