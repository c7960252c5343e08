"""Emotions over time (`emotion-predict --timeline`): recordings of any length streamed in blocks, speech found by
silero-vad or given by a diarization (RTTM, CSV), each segment classified, each speaker by their own statistics.

Recordings are made of real speech (Emo-DB, SAVEE from ../shared/data) joined by pauses of low noise (-60 dBFS),
written under the test's tmp folder; the tests are skipped, saying why, where the corpora are absent."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from sklearn.linear_model import LogisticRegression

from emotion.cli import predict
from emotion.data.audio import load_audio
from emotion.data.features import MelMean, Spectral
from emotion.data.frontend import AudioFrontEnd
from emotion.data.normalize import SpeakerNormalizer
from emotion.errors import DataError
from emotion.models.estimator import EstimatorHead
from emotion.serving.files import audio_files
from emotion.serving.recognizer import EmotionRecognizer
from emotion.serving.segments import SPEECH_PAD, Segment, plan, read_segments, speech_segments
from emotion.serving.streaming import cut, cut_each, scan, stream, vad_model
from emotion.serving.timeline import COLUMNS, timelines
from emotion.serving.timeline_plot import plot_timeline

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EMODB, SAVEE = DATA / "emodb" / "wav", DATA / "savee"
needs_corpora = pytest.mark.skipif(not (EMODB.is_dir() and SAVEE.is_dir()), reason=f"no Emo-DB and SAVEE under {DATA}")
RATE = 16_000
#: Low noise between the clips: -60 dBFS RMS.
QUIET = 10 ** (-60 / 20)


def noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(round(seconds * RATE)) * QUIET).astype(np.float32)


def clip(path: Path) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32")
    assert rate == RATE
    return samples


def joined(clips: list[Path], pauses: list[float], rng: np.random.Generator) -> tuple[np.ndarray, list[tuple]]:
    """The clips one after the other, each after its pause of low noise, a last pause after them; each clip's span
    (seconds)."""
    parts, spans, time = [], [], 0.0
    for path, pause in zip(clips, pauses, strict=False):
        samples = clip(path)
        parts += [noise(pause, rng), samples]
        time += pause
        spans.append((time, time + len(samples) / RATE))
        time += len(samples) / RATE
    parts.append(noise(pauses[-1], rng))
    return np.concatenate(parts), spans


def found_each(spans: list[tuple], segments: list[Segment], within: float = 0.3 + SPEECH_PAD) -> None:
    """Each span has segments covering half of it or more, the first starting and the last ending within
    `within` s of its own start and end (the detector's, widened by `SPEECH_PAD`); every segment lies on a span."""
    for start, end in spans:
        over = [s for s in segments if s.end > start and s.start < end]
        covered = sum(min(end, s.end) - max(start, s.start) for s in over)
        assert covered >= (end - start) / 2, f"clip {start:.2f}-{end:.2f} s: found {over}"
        assert abs(over[0].start - start) <= within and abs(over[-1].end - end) <= within, (start, end, over)
    for segment in segments:
        assert any(segment.end > start and segment.start < end for start, end in spans), f"{segment}: no speech"


@pytest.fixture(scope="module")
def adaptive() -> EmotionRecognizer:
    """A speaker-adaptive logistic regression on mean log-mel (a 1.95 s centre window), trained in a second on
    SAVEE's KL and JK, each speaker standardised by their own clips (2 clips are enough)."""
    if not SAVEE.is_dir():
        pytest.skip(f"no SAVEE under {SAVEE}")
    features = MelMean(Spectral())
    front_end = AudioFrontEnd(features, min_duration=0.25, max_duration=300.0, trained_model=True)
    classes = ["angry", "happy", "neutral", "sad"]
    codes = {"angry": "a", "happy": "h", "neutral": "n", "sad": "sa"}
    paths = [SAVEE / f"{who}_{codes[name]}{i:02d}.wav" for who in ("KL", "JK") for name in classes for i in (1, 2, 3)]
    inputs = front_end.inputs([front_end.prepare(front_end.decode(p)) for p in paths])
    speakers = [p.name[:2] for p in paths]
    normalizer = SpeakerNormalizer(features.shapes(), mode="speaker", min_clips=2, shrinkage=0)
    normalizer.fit(inputs)
    head = EstimatorHead(LogisticRegression(max_iter=500), classes, list(inputs), normalizer)
    normalized, _ = normalizer(inputs, speakers)
    head.estimator.fit(head.rows(normalized), [classes.index(n) for n in classes for _ in (1, 2, 3)] * 2)
    return EmotionRecognizer(head, front_end, {})


@needs_corpora
def test_the_detector_finds_each_clip_of_a_recording_within_a_few_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples, spans = joined(sorted(EMODB.glob("03a0*.wav"))[:6], [0.5, 1.5, 0.8, 1.2, 0.6, 1.0, 0.7], rng)
    sf.write(tmp_path / "talk.wav", samples, RATE)

    found = scan(tmp_path / "talk.wav")
    segments = speech_segments(found)
    assert found.duration == pytest.approx(len(samples) / RATE, abs=1e-3)
    assert len(segments) == 6  # pauses of 0.5 s or more part them; none is found in the noise
    found_each(spans, segments)
    pieces = plan(segments, found.duration, shortest=0.25, longest=1.0, levels=found.levels)
    assert all(0.25 <= p.duration <= 1.0 + 1e-9 for p in pieces) and len(pieces) > len(segments)
    assert sum(p.duration for p in pieces) == pytest.approx(sum(s.duration for s in segments))  # cut, none lost


@needs_corpora
def test_a_diarization_names_each_segments_speaker_and_each_speaker_is_normalised_by_their_own(
    adaptive: EmotionRecognizer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(2)
    turns = [SAVEE / name for name in ("DC_a01.wav", "JE_h01.wav", "DC_n01.wav", "JE_sa01.wav", "DC_h02.wav")]
    samples, spans = joined(turns, [0.4, 0.3, 0.5, 0.3, 0.4, 0.6], rng)
    sf.write(tmp_path / "call.flac", samples, RATE)
    names = {"DC": "SPEAKER_00", "JE": "SPEAKER_01"}
    rttm = [f"SPEAKER call 1 {s:.3f} {e - s:.3f} <NA> <NA> {names[p.name[:2]]} <NA> <NA>"
            for p, (s, e) in zip(turns, spans, strict=True)]  # fmt: skip
    (tmp_path / "call.rttm").write_text("\n".join(rttm) + "\n")

    frame = timelines(adaptive, [tmp_path / "call.flac"], segments=tmp_path / "call.rttm").frame
    assert list(frame.columns) == [*COLUMNS, "prob_angry", "prob_happy", "prob_neutral", "prob_sad"]
    assert (frame["end"] - frame["start"]).max() <= 31232 / RATE + 1e-6  # each piece fits the model's window
    for row in frame.itertuples():
        middle = (row.start + row.end) / 2
        (turn,) = [p for p, (s, e) in zip(turns, spans, strict=True) if s <= middle <= e]
        assert row.speaker == names[turn.name[:2]], row
    assert set(frame["normalization"]) == {"speaker"}

    path = tmp_path / "call.flac"
    probabilities = torch.tensor(frame.filter(like="prob_").to_numpy(), dtype=torch.float32)
    waves = cut(path, list(zip(frame["start"], frame["end"], strict=True)), RATE)
    for speaker in names.values():
        rows = [i for i, who in enumerate(frame["speaker"]) if who == speaker]
        alone = adaptive.classify_waves([waves[i] for i in rows], [speaker] * len(rows), None, False)
        torch.testing.assert_close(probabilities[rows], alone.probabilities, atol=1e-5, rtol=0)
    as_one = adaptive.classify_waves(waves, ["one"] * len(waves), None, False).probabilities
    assert (as_one - probabilities).abs().max() > 1e-3  # their own statistics, not the recording's
    one_by_one = timelines(adaptive, [path], segments=tmp_path / "call.rttm", group_seconds=0.1).frame
    pd.testing.assert_frame_equal(one_by_one, frame, atol=1e-6)  # features a segment at a time: the same rows

    figure = plot_timeline(frame, len(samples) / RATE, "call.flac")
    FigureCanvasAgg(figure).draw()
    assert [ax.get_ylabel() for ax in figure.axes] == list(names.values())  # a lane per speaker


@needs_corpora
def test_a_recording_over_300_s_is_streamed_in_blocks_and_its_speech_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    samples = noise(305, rng)
    spans = []
    for start, path in zip((20.0, 151.3, 290.0), sorted(EMODB.glob("03b0*.wav"))[:3], strict=True):
        speech = clip(path)
        samples[round(start * RATE) : round(start * RATE) + len(speech)] = speech
        spans.append((start, start + len(speech) / RATE))
    path = tmp_path / "interview.flac"
    sf.write(path, samples, RATE)
    whole = samples.nbytes  # 19.5 MB of float32
    del samples
    with pytest.raises(DataError, match=r"longer than data\.max_duration=300"):
        load_audio(path, RATE)  # the one-label path refuses it

    vad_model()  # loaded before: its code and weights are not the decoding's
    tracemalloc.start()
    found = scan(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < whole / 5, f"decoding held {peak / 1e6:.1f} MB at once"  # about 2.5 MB: a 10 s block or two
    segments = speech_segments(found)
    found_each(spans, segments)

    tracemalloc.start()
    waves = cut(path, [(s.start, s.end) for s in segments], RATE)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < whole / 5 and [len(w) for w in waves] == [round(s.end * RATE) - round(s.start * RATE)
                                                            for s in segments]  # fmt: skip


def test_blocks_resampled_apart_join_as_the_whole_file_resampled_at_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    stereo = (rng.standard_normal((44_100 * 3 + 17, 2)) * 0.1).astype(np.float32)
    sf.write(tmp_path / "a.wav", stereo, 44_100)
    sf.write(tmp_path / "a.mp3", stereo, 44_100, format="MP3")
    for name in ("a.wav", "a.mp3"):
        blocks = list(stream(tmp_path / name, RATE, block_seconds=0.7))
        assert len(blocks) > 3
        torch.testing.assert_close(torch.cat(blocks), load_audio(tmp_path / name, RATE), atol=1e-6, rtol=0)
    assert [p.name for p in audio_files([tmp_path])] == ["a.mp3", "a.wav"]  # folders are searched for MP3 too

    whole = load_audio(tmp_path / "a.wav", RATE)
    spans = [(0.5, 2.9), (0.2, 0.6), (1.0, 1.0), (2.5, 9.0)]  # overlapping, out of order, empty, past the end
    waves = dict(cut_each(tmp_path / "a.wav", spans, RATE, block_seconds=0.7))
    assert sorted(waves) == [0, 1, 2, 3]
    for index, (start, end) in enumerate(spans):
        torch.testing.assert_close(waves[index], whole[round(start * RATE) : round(end * RATE)], atol=1e-6, rtol=0)


def test_a_bad_rttm_or_csv_line_is_one_error_naming_its_line(tmp_path: Path, capsys) -> None:
    rttm = tmp_path / "call.rttm"
    rttm.write_text("SPEAKER call 1 0.00 2.50 <NA> <NA> alice <NA> <NA>\n\nSPEAKER call 1 two 1.0 <NA> <NA> bob\n")
    with pytest.raises(DataError, match=r"call\.rttm line 3: start 'two' is not a number of seconds"):
        read_segments(rttm)
    rttm.write_text("SPEAKER call 1 0.00 2.50 <NA> <NA> alice <NA> <NA>\nSPEAKER call 1 3.0\n")
    with pytest.raises(DataError, match=r"line 2: not an RTTM SPEAKER record"):
        read_segments(rttm)
    table = tmp_path / "turns.csv"
    table.write_text("start,end,speaker\n0,2.5,alice\n3.0,2.0,bob\n")
    with pytest.raises(DataError, match=r"turns\.csv line 3: end 2\.0 is not after start 3\.0"):
        read_segments(table)

    (tmp_path / "call.wav").write_bytes(b"")
    with pytest.raises(SystemExit) as exited:
        predict.main(["--timeline", str(tmp_path / "call.wav"), "--segments", str(table)])
    assert exited.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()  # before any model is loaded
    assert line.startswith("error: ") and "turns.csv line 3" in line


@needs_corpora
def test_emotion_predict_writes_a_timeline_and_a_picture_of_an_mp3_recording(
    adaptive: EmotionRecognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(5)
    samples, spans = joined(sorted(EMODB.glob("11a0*.wav"))[:4], [0.6, 1.0, 0.8, 1.2, 0.5], rng)
    (tmp_path / "calls").mkdir()
    sf.write(tmp_path / "calls" / "monday.mp3", samples, RATE, format="MP3")
    monkeypatch.setattr(predict, "load_recognizer", lambda uri, tracking_uri: adaptive)

    output = tmp_path / "timeline.csv"
    predict.main(["--timeline", str(tmp_path / "calls"), "--plot", str(tmp_path / "plots"), "--smooth", "3",
                  "--format", "csv", "-o", str(output)])  # fmt: skip
    frame = pd.read_csv(output)
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert set(frame["file"]) == {str(tmp_path / "calls" / "monday.mp3")} and set(frame["speaker"]) == {"monday"}
    found_each(spans, [Segment(r.start, r.end) for r in frame.itertuples()], within=0.35)  # MP3's delay
    assert frame.filter(like="prob_").sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "plots" / "monday.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
