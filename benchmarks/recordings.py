"""The timeline (`emotion-predict --timeline`) on long recordings made of a corpus's held-out speakers.

Each recording is one speaker's clips (or two speakers' turns) in a seeded random order, each after a pause of
0.2 to 2 s, half of them digital silence and half white noise at -60 to -50 dBFS, written as 16-bit WAV under a
temporary folder. The models are the fold models of a leave-one-speaker-out cross-validation, each given its own
held-out speaker's recording.

- `--study eval`: per fold, the timeline as `emotion-predict --timeline` runs it (`timelines`, one speaker per
  file, each segment encoded alone) under each detector planning of `--planning GAP:PAD` (merge gap and pad,
  set where `emotion.serving.segments` reads them), with `--windows` the same segments pooled from 30 s windows of
  the recording's real audio (`windowed_timeline`), with `--oracle` the true clips' spans given as segments, and
  (unless `--no-clips`) the same model clip by clip (`classify_waves` on the speaker's clip files, their
  statistics from all of them). Reports clips found (the segments overlapping a clip cover half of it or more),
  boundary errors, clips split and merged, and each way's UAR over the clips (a clip labelled by the
  overlap-weighted probabilities of the segments overlapping it) and real-time factor, pooled over the folds.
- `--study planning`: the detector alone (no model) on the same recordings, for each `--planning`.
- `--study speed`: the timeline's real-time factor and peak memory (VmHWM of a fresh process) over a long
  recording of the first fold's speaker (clips looped), for each encoding, with `cut` as saved and with the
  encoder switched to `pad30` (a cost only: no pad30 fold model was trained), variants round-robin.
- `--study rttm`: a two-speaker recording (alternating turns of 1 to 4 clips) and the RTTM of its true turns,
  classified with the turns' speakers and with the same turns as one speaker (the segments encoded once), and
  with `--windows` the detector's segments as one speaker; `--run` a model trained without both speakers.
- `--study picture`: a short two-speaker recording and its RTTM, drawn by `emotion-predict --timeline --plot`.

python -m benchmarks.recordings --study eval --cv-run 9c9eae9e87be4192a6842b8bdeedd2dd \
    --tracking-uri sqlite:////tmp/bench/mlruns.db --data ../shared/data/savee --reader savee
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import soundfile as sf
import torch

import emotion.serving.segments as segments_module
from benchmarks.common import fold_runs, in_fresh_process, machine, timed
from benchmarks.speaker_clips import uar
from emotion.data.corpora import EMOTIONS, EXTRA_EMOTIONS, Clip, read_corpus
from emotion.data.ssl import SSLLayers
from emotion.encoders.base import length_batches, pad_batch, resolved_precision
from emotion.serving.files import load_recognizer
from emotion.serving.recognizer import EmotionRecognizer
from emotion.serving.segments import MERGE_GAP, SPEECH_PAD, Segment, plan, read_segments, speech_segments
from emotion.serving.streaming import cut, scan
from emotion.serving.timeline import MAX_SEGMENT, timelines
from emotion.serving.timeline import planned as timeline_plan

RESULTS = Path(__file__).with_suffix(".json")
RATE = 16_000
PAUSE = (0.2, 2.0)
NOISE_DBFS = (-60.0, -50.0)
#: The windows of real audio `windowed_timeline` encodes (seconds): Whisper's input.
WINDOW = 30.0
#: The detector's merge gap and pad (`GAP:PAD`) before this benchmark measured them.
BEFORE = "0.3:0"
#: The share of each of two clips one segment covers that makes them merged.
MERGED_SHARE = 0.25
#: The fold models' data.min_duration (the planning study's, which loads no model).
MIN_DURATION = 0.25
#: What the planning study (no model) does not report.
DETECTOR_ONLY = ("uar", "scored_clips", "real_time_factor")
#: Whisper's encoder output frame (seconds).
WHISPER_FRAME = 0.02


@dataclass(frozen=True)
class Placed:
    """A clip where a recording holds it (seconds), with its label and speaker."""

    start: float
    end: float
    emotion: str
    speaker: str


def pause(rng: np.random.Generator) -> np.ndarray:
    """0.2 to 2 s of digital silence or of white noise at -60 to -50 dBFS (even odds)."""
    samples = round(rng.uniform(*PAUSE) * RATE)
    if rng.random() < 0.5:
        return np.zeros(samples, dtype=np.float32)
    return (rng.standard_normal(samples) * 10 ** (rng.uniform(*NOISE_DBFS) / 20)).astype(np.float32)


def write_recording(clips: list[Clip], path: Path, rng: np.random.Generator) -> list[Placed]:
    """The clips one after the other, each after a pause, a pause after the last, written to `path` (16-bit WAV,
    one clip at a time); where each lies."""
    placed, time_ = [], 0.0
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as out:
        for clip in clips:
            gap = pause(rng)
            samples, rate = sf.read(clip.path, dtype="float32")
            assert rate == RATE and samples.ndim == 1, f"{clip.path}: 16 kHz mono expected"
            out.write(np.concatenate([gap, samples]))
            time_ += len(gap) / RATE
            placed.append(Placed(time_, time_ + len(samples) / RATE, clip.emotion, clip.speaker))
            time_ += len(samples) / RATE
        out.write(pause(rng))
    return placed


def shuffled(clips: list[Clip], rng: np.random.Generator) -> list[Clip]:
    return [clips[i] for i in rng.permutation(len(clips))]


def looped(clips: list[Clip], seconds: float, rng: np.random.Generator) -> list[Clip]:
    """The clips in fresh random orders, again and again, until they (with pauses of 1.1 s on average) last
    `seconds`."""
    mean = float(np.mean([sf.info(c.path).duration for c in clips])) + sum(PAUSE) / 2
    order: list[Clip] = []
    while len(order) * mean < seconds:
        order += shuffled(clips, rng)
    return order[: max(1, round(seconds / mean))]


def overlaps(placed: list[Placed], frame: pd.DataFrame) -> np.ndarray:
    """(clips, segments) seconds each segment of a timeline overlaps each clip."""
    starts, ends = np.array([p.start for p in placed]), np.array([p.end for p in placed])
    first, last = frame["start"].to_numpy(), frame["end"].to_numpy()
    return np.clip(np.minimum(ends[:, None], last[None]) - np.maximum(starts[:, None], first[None]), 0, None)


def matched(placed: list[Placed], frame: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    """Per clip: found (the segments overlapping it cover half of it or more), the start and end errors of the
    first and last of them, split (2 or more segments overlap it more than any other clip), merged (a segment
    overlapping it overlaps another clip), and the timeline's label (the segments overlapping it, their
    probabilities weighted by their overlap). `frame`: a timeline's rows in time order."""
    over = overlaps(placed, frame)
    owner = np.where(over.max(axis=0) > 0, over.argmax(axis=0), -1)
    lengths = np.array([p.end - p.start for p in placed])
    shared = (over >= MERGED_SHARE * lengths[:, None]).sum(axis=0) > 1
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy()
    rows = []
    for index, clip in enumerate(placed):
        weights = over[index]
        touching = np.flatnonzero(weights > 0)
        rows.append({
            "found": bool(weights.sum() >= (clip.end - clip.start) / 2),
            "start_error": abs(frame["start"].iloc[touching[0]] - clip.start) if len(touching) else math.nan,
            "end_error": abs(frame["end"].iloc[touching[-1]] - clip.end) if len(touching) else math.nan,
            "split": int((owner == index).sum()) > 1,
            "merged": bool(shared[touching].any()),
            "label": classes[int((weights @ probs).argmax())] if len(touching) else "none",
        })  # fmt: skip
    return pd.DataFrame(rows)


def windowed_timeline(recognizer: EmotionRecognizer, path: Path, speaker: str) -> pd.DataFrame:
    """The timeline's segments (`emotion.serving.timeline.planned`), each pooled from the encoder's frames of
    a window of the recording's real audio: consecutive segments grouped into windows of at most `WINDOW` s, each
    window encoded once. Columns `start`, `end`, `prob_<class>`."""
    planned, _ = timeline_plan(recognizer, path, speaker)
    groups = windows_of(planned)
    spans = [(group[0].start, max(s.end for s in group)) for group in groups]
    waves = cut(path, spans, recognizer.sample_rate)
    stored = pooled_from_windows(recognizer.features, waves, [[(s.start - a, s.end - a) for s in g] for g, (a, _) in
                                                     zip(groups, spans, strict=True)])  # fmt: skip
    raw = recognizer.features.view(stored)
    probabilities, _ = recognizer.classify_inputs(raw, [speaker] * len(planned))
    frame = pd.DataFrame({"start": [s.start for s in planned], "end": [s.end for s in planned]})
    for index, name in enumerate(recognizer.classes):
        frame[f"prob_{name}"] = probabilities[:, index].double().numpy()
    return frame


def windows_of(segments: list[Segment]) -> list[list[Segment]]:
    """Consecutive segments (in time order) grouped so each group spans at most `WINDOW` s."""
    groups: list[list[Segment]] = []
    for segment in segments:
        if groups and segment.end - groups[-1][0].start <= WINDOW:
            groups[-1].append(segment)
        else:
            groups.append([segment])
    return groups


@torch.no_grad()
def pooled_from_windows(
    features: SSLLayers, waves: list[torch.Tensor], spans: list[list[tuple[float, float]]]
) -> dict[str, torch.Tensor]:
    """Each span's layers' mean and std over its frames of its window's encoding (`ssl_mean`, `ssl_std`: the
    cached statistics a clip has), spans in order."""
    encoder = features.encoder
    means: dict[tuple[int, int], torch.Tensor] = {}
    stds: dict[tuple[int, int], torch.Tensor] = {}
    budget = features.batch_samples
    for batch in length_batches([encoder.padded_cost(len(w)) for w in waves], budget):
        padded, lengths = pad_batch([waves[i] for i in batch])
        layers, frames = encoder.hidden_states(padded.float(), lengths)
        stacked = torch.stack(layers, dim=1).double()  # (batch, layers, frames, width)
        for row, window in enumerate(batch):
            for k, (start, end) in enumerate(spans[window]):
                first = min(int(start / WHISPER_FRAME), int(frames[row]) - 1)
                last = max(first + 1, min(math.ceil(end / WHISPER_FRAME), int(frames[row])))
                piece = stacked[row, :, first:last]
                means[(window, k)] = piece.mean(dim=1).float()
                stds[(window, k)] = piece.std(dim=1, unbiased=False).float()
    keys = [(w, k) for w in range(len(waves)) for k in range(len(spans[w]))]
    return {"ssl_mean": torch.stack([means[k] for k in keys]), "ssl_std": torch.stack([stds[k] for k in keys])}


def clip_by_clip(recognizer: EmotionRecognizer, clips: list[Clip], speaker: str) -> list[str]:
    """Each clip's label from its own file, the speaker's statistics those of all these clips."""
    waves = [recognizer.decode(c.path) for c in clips]
    probabilities = recognizer.classify_waves(waves, [speaker] * len(clips)).probabilities
    return [recognizer.classes[int(i)] for i in probabilities.argmax(dim=1)]


def eval_study(args: argparse.Namespace, folder: Path) -> dict:
    """Each fold's held-out speaker's recording through the timeline (each segment alone, for each `--speech-pad`;
    and from windows) and clip by clip; the clips' matches and labels pooled over the folds, per way."""
    client = mlflow.MlflowClient(args.tracking_uri)
    everything = read_corpus(args.data, args.reader, classes=[*EMOTIONS, *EXTRA_EMOTIONS]).clips
    rows: dict[str, list[pd.DataFrame]] = {}
    folds = []
    for fold, run in enumerate(fold_runs(client, args.cv_run)[: args.folds]):
        speaker = run.data.params["split.test_speakers"]
        clips = [c for c in everything if c.speaker == speaker]
        recognizer = load_recognizer(f"runs:/{run.info.run_id}", args.tracking_uri)
        rng = np.random.default_rng(args.seed + fold)
        order = shuffled(clips, rng)
        path = folder / f"{args.reader}-{speaker}.wav"
        placed = write_recording(order, path, rng)
        ways = eval_ways(recognizer, path, speaker, order, args.planning, args.windows, not args.no_clips)
        if args.oracle:  # the true clips' spans as the segments: the timeline's path without the detector
            spans = {None: [Segment(p.start, p.end) for p in placed]}
            ways = {"true spans": functools.partial(given_spans, recognizer, path, speaker, spans)} | ways
        names = list(ways)[fold % len(ways) :] + list(ways)[: fold % len(ways)]  # a different one first each fold
        seconds, results = {}, {}
        for name in names:
            seconds[name], results[name] = timed(ways[name])
        truth = [p.emotion for p in placed]
        for name, result in results.items():
            found = pd.DataFrame({"label": result}) if name == "clips" else matched(placed, result, recognizer.classes)
            rows.setdefault(name, []).append(found.assign(truth=truth, fold=fold))
            print(name, json.dumps(summary(rows[name][-1], 0.0)), flush=True)
        folds.append({"fold": fold, "speaker": speaker, "clips": len(placed), "recording_s": round(
            sf.info(path).duration, 1), "seconds": {k: round(v, 1) for k, v in seconds.items()}})  # fmt: skip
        print(json.dumps(folds[-1]), flush=True)
    recording = sum(f["recording_s"] for f in folds)
    table = {name: summary(pd.concat(found), recording / sum(f["seconds"][name] for f in folds))
             for name, found in rows.items()}  # fmt: skip
    return {"corpus": args.reader, "cv_run": args.cv_run, "recording_s": round(recording, 1), "ways": table,
            "folds": folds}  # fmt: skip


def eval_ways(
    recognizer: EmotionRecognizer,
    path: Path,
    speaker: str,
    order: list[Clip],
    plannings: list[str],
    windows: bool,
    clips: bool = True,
) -> dict[str, Callable]:
    """The ways a held-out speaker's clips are labelled: the timeline with each segment encoded alone, under each
    planning of `plannings` (`GAP:PAD`: the detector's `MERGE_GAP` and `SPEECH_PAD`, set where the timeline reads
    them), from windows (`windows`: under the last planning), and clip by clip (`clips`)."""

    def alone(planning: str) -> pd.DataFrame:
        use_planning(planning)
        return timelines(recognizer, [path], [speaker]).frame

    def windowed() -> pd.DataFrame:
        use_planning(plannings[-1])
        return windowed_timeline(recognizer, path, speaker)

    ways: dict[str, Callable] = {f"alone {p}": functools.partial(alone, p) for p in plannings}
    if windows:
        ways["windows"] = windowed
    if clips:
        ways["clips"] = lambda: clip_by_clip(recognizer, order, speaker)
    return ways


def given_spans(recognizer: EmotionRecognizer, path: Path, speaker: str, spans: dict) -> pd.DataFrame:
    """The timeline of `path` with `spans` as its diarization's segments."""
    return timelines(recognizer, [path], [speaker], segments=spans).frame


def use_planning(planning: str) -> None:
    """The detector's merge gap and pad (`GAP:PAD`, seconds) set where `emotion.serving.segments` reads them."""
    gap, pad = (float(x) for x in planning.split(":"))
    segments_module.MERGE_GAP, segments_module.SPEECH_PAD = gap, pad


def summary(rows: pd.DataFrame, real_time_factor: float) -> dict:
    """The pooled figures of one way's clips' rows (`matched`, or the clip-by-clip `label` alone, with `truth`)."""
    scored = rows[rows["truth"].isin(EMOTIONS)]
    figures = {"clips": len(rows), "scored_clips": len(scored), "real_time_factor": round(real_time_factor, 1),
               "uar": round(uar(list(scored["truth"]), list(scored["label"])), 4) if len(scored) else None}  # fmt: skip
    if "found" not in rows:
        return figures
    errors = pd.concat([rows["start_error"], rows["end_error"]]).dropna()
    return figures | {
        "found": round(float(rows["found"].mean()), 4), "split": int(rows["split"].sum()),
        "merged": int(rows["merged"].sum()),
        "boundary_error_s": {"median": round(float(errors.median()), 3), "p90": round(float(errors.quantile(0.9)), 3),
                             "start_median": round(float(rows["start_error"].median()), 3),
                             "end_median": round(float(rows["end_error"].median()), 3)},
    }  # fmt: skip


def planning_study(args: argparse.Namespace, folder: Path) -> dict:
    """The detector alone (no model) on the eval's recordings (the same seeds): clips found, split and merged
    and boundary errors for each planning of `--planning` (`GAP:PAD`), pooled over the folds."""
    client = mlflow.MlflowClient(args.tracking_uri)
    everything = read_corpus(args.data, args.reader, classes=[*EMOTIONS, *EXTRA_EMOTIONS]).clips
    rows: dict[str, list[pd.DataFrame]] = {}
    for fold, run in enumerate(fold_runs(client, args.cv_run)[: args.folds]):
        speaker = run.data.params["split.test_speakers"]
        rng = np.random.default_rng(args.seed + fold)
        path = folder / f"{args.reader}-{speaker}.wav"
        placed = write_recording(shuffled([c for c in everything if c.speaker == speaker], rng), path, rng)
        found = scan(path)
        for planning in args.planning:
            use_planning(planning)
            pieces = plan(speech_segments(found), found.duration, MIN_DURATION, MAX_SEGMENT, found.levels)
            frame = pd.DataFrame({"start": [p.start for p in pieces], "end": [p.end for p in pieces], "prob_x": 1.0})
            rows.setdefault(planning, []).append(matched(placed, frame, ("x",)).assign(truth="x"))
    table = {planning: {k: v for k, v in summary(pd.concat(found), math.nan).items() if k not in DETECTOR_ONLY}
             for planning, found in rows.items()}  # fmt: skip
    return {"corpus": args.reader, "cv_run": args.cv_run, "plannings": table}


def speed_run(
    model: str, tracking_uri: str, path: str, whisper_input: str, encoding: str, precision: str | None = None
) -> dict:
    """One timeline of `path` in this process (`in_fresh_process`): seconds to load the model and to make it
    (`precision`: the encoder's, instead of the model's)."""
    started = time.perf_counter()
    recognizer = load_recognizer(model, tracking_uri)
    recognizer.features.encoder.whisper_input = whisper_input
    if precision is not None:
        recognizer.features.encoder.precision = resolved_precision(precision, recognizer.features.encoder.device)
    loaded = time.perf_counter()
    if encoding == "alone":
        frame = timelines(recognizer, [Path(path)], ["speaker"]).frame
    else:
        frame = windowed_timeline(recognizer, Path(path), "speaker")
    return {"load_s": round(loaded - started, 2), "timeline_s": round(time.perf_counter() - loaded, 2),
            "segments": len(frame)}  # fmt: skip


def speed_study(args: argparse.Namespace, folder: Path) -> dict:
    """Real-time factor and peak memory of the timeline over the first fold's speaker looped to `--minutes` (cut)
    and to `--pad30-minutes` (the encoder switched to pad30), each encoding, variants round-robin."""
    client = mlflow.MlflowClient(args.tracking_uri)
    run = fold_runs(client, args.cv_run)[0]
    speaker = run.data.params["split.test_speakers"]
    clips = [c for c in read_corpus(args.data, args.reader).clips if c.speaker == speaker]
    rng = np.random.default_rng(args.seed)
    files = {}
    for minutes in sorted({args.minutes, args.pad30_minutes}):
        files[minutes] = folder / f"{args.reader}-{speaker}-{minutes:g}min.wav"
        write_recording(looped(clips, minutes * 60, rng), files[minutes], rng)
    lengths = (("cut", args.minutes), ("pad30", args.pad30_minutes))
    variants = [(policy, encoding, minutes) for policy, minutes in lengths for encoding in args.encodings]
    rows = []
    for repeat in range(args.repeats):
        for whisper_input, encoding, minutes in variants:
            model = f"runs:/{run.info.run_id}"
            result, peak = in_fresh_process(speed_run, model, args.tracking_uri, str(files[minutes]), whisper_input,
                                            encoding, args.precision)  # fmt: skip
            seconds = sf.info(files[minutes]).duration
            rows.append({"whisper_input": whisper_input, "encoding": encoding, "precision": args.precision or "model's",
                         "repeat": repeat,
                         "recording_s": round(seconds, 1), **result,
                         "real_time_factor": round(seconds / result["timeline_s"], 1),
                         "peak_rss_mb": round(peak), "load_average": os.getloadavg()})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return {"corpus": args.reader, "cv_run": args.cv_run, "fold_run": run.info.run_id, "speaker": speaker,
            "precision": args.precision, "runs": rows}  # fmt: skip


def turns_recording(clips: dict[str, list[Clip]], seconds: float, path: Path, rng: np.random.Generator) -> tuple:
    """Two speakers' alternating turns of 1 to 4 clips (each speaker's clips looped in fresh orders) lasting about
    `seconds`, written to `path`, and the RTTM of its turns beside it (`.rttm`); the clips placed, the RTTM path."""
    names = sorted(clips)
    queues = {name: looped(clips[name], seconds, rng) for name in names}
    order: list[Clip] = []
    total, turn = 0.0, 0
    while total < seconds:
        queue = queues[names[turn % 2]]
        for _ in range(int(rng.integers(1, 5))):
            order.append(queue.pop())
            total += sf.info(order[-1].path).duration + sum(PAUSE) / 2
        turn += 1
    placed = write_recording(order, path, rng)
    lines = []
    for group in turns_of(placed):
        start, end = group[0].start, group[-1].end
        lines.append(f"SPEAKER {path.stem} 1 {start:.3f} {end - start:.3f} <NA> <NA> {group[0].speaker} <NA> <NA>")
    rttm = path.with_suffix(".rttm")
    rttm.write_text("\n".join(lines) + "\n")
    return placed, rttm


def turns_of(placed: list[Placed]) -> list[list[Placed]]:
    """Consecutive clips of the same speaker, grouped."""
    groups: list[list[Placed]] = []
    for clip in placed:
        if groups and groups[-1][-1].speaker == clip.speaker:
            groups[-1].append(clip)
        else:
            groups.append([clip])
    return groups


def rttm_study(args: argparse.Namespace, folder: Path) -> dict:
    """A two-speaker recording classified with its RTTM's speakers, with its turns as one speaker, and with the
    detector's segments as one speaker: each way's UAR per speaker and pooled, and how each speaker was
    normalised."""
    everything = read_corpus(args.data, args.reader, classes=[*EMOTIONS, *EXTRA_EMOTIONS]).clips
    clips = {name: [c for c in everything if c.speaker == name] for name in args.speakers}
    path = folder / "two-speakers.wav"
    placed, rttm = turns_recording(clips, args.minutes * 60, path, np.random.default_rng(args.seed))
    recognizer = load_recognizer(f"runs:/{args.run}", args.tracking_uri)
    remember_inputs(recognizer)
    turns = [replace(s, speaker=None) for s in next(iter(read_segments(rttm).values()))]
    ways = {
        "rttm_speakers": lambda: timelines(recognizer, [path], segments=rttm).frame,
        "rttm_one_speaker": lambda: timelines(recognizer, [path], ["one"], segments={None: turns}).frame,
    }
    if args.windows:  # (the flag reused: the detector's segments too, encoded anew)
        ways["vad_one_speaker"] = lambda: timelines(recognizer, [path], ["one"]).frame
    results = {}
    for name, way in ways.items():
        seconds, frame = timed(way)
        rows = matched(placed, frame, recognizer.classes).assign(truth=[p.emotion for p in placed],
                                                                 speaker=[p.speaker for p in placed])  # fmt: skip
        scored = rows[rows["truth"].isin(EMOTIONS)]
        results[name] = {
            "uar": round(uar(list(scored["truth"]), list(scored["label"])), 4),
            "uar_per_speaker": {s: round(uar(list(g["truth"]), list(g["label"])), 4)
                                for s, g in scored.groupby("speaker")},
            "found": round(float(rows["found"].mean()), 4), "segments": len(frame), "seconds": round(seconds, 1),
            "segments_per_speaker": frame["speaker"].value_counts().to_dict(),
            "normalization": frame.groupby("speaker")["normalization"].agg(lambda v: sorted(set(v))).to_dict(),
        }  # fmt: skip
        print(name, json.dumps(results[name]), flush=True)
    return {"corpus": args.reader, "run": args.run, "speakers": args.speakers, "clips": len(placed),
            "recording_s": round(sf.info(path).duration, 1), "turns": len(turns), **results}  # fmt: skip


def remember_inputs(recognizer: EmotionRecognizer) -> None:
    """The recognizer's front end remembers each waveform's inputs (crop features: a row a clip), so the same
    segments classified again with other speakers are not encoded again."""
    compute, known = recognizer.front_end.inputs, {}

    def inputs(waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = [hash(wave.numpy().tobytes()) for wave in waves]
        missing = [i for i, key in enumerate(keys) if key not in known]
        if missing:
            fresh = compute([waves[i] for i in missing])
            for row, i in enumerate(missing):
                known[keys[i]] = {name: tensor[row] for name, tensor in fresh.items()}
        return {name: torch.stack([known[key][name] for key in keys]) for name in known[keys[0]]}

    recognizer.front_end.inputs = inputs


def picture_study(args: argparse.Namespace, folder: Path) -> dict:
    """A short two-speaker recording (`recording.wav`) and its RTTM, drawn by `emotion-predict --timeline --plot`
    into `--plot-dir`."""
    everything = read_corpus(args.data, args.reader, classes=[*EMOTIONS, *EXTRA_EMOTIONS]).clips
    clips = {name: [c for c in everything if c.speaker == name] for name in args.speakers}
    path = folder / "recording.wav"
    placed, rttm = turns_recording(clips, args.minutes * 60, path, np.random.default_rng(args.seed))
    command = [sys.executable, "-m", "emotion.cli.predict", str(path), "--segments", str(rttm), "--model",
               f"runs:/{args.run}", "--tracking-uri", args.tracking_uri, "--plot", str(args.plot_dir), "--smooth",
               str(args.smooth), "--format", "csv"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    print(done.stdout)
    truth = [{"start": round(p.start, 2), "end": round(p.end, 2), "speaker": p.speaker, "emotion": p.emotion}
             for p in placed]  # fmt: skip
    return {"corpus": args.reader, "run": args.run, "speakers": args.speakers, "command": " ".join(command[1:]),
            "picture": str(Path(args.plot_dir) / "recording.png"), "truth": truth}  # fmt: skip


STUDIES = {
    "eval": eval_study,
    "planning": planning_study,
    "speed": speed_study,
    "rttm": rttm_study,
    "picture": picture_study,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=tuple(STUDIES), default="eval")
    parser.add_argument("--cv-run", help="eval, speed: the parent run of a normalize=speaker LOSO cross-validation")
    parser.add_argument("--run", help="rttm, picture: a run whose model was trained without --speakers")
    parser.add_argument("--speakers", nargs=2, help="rttm, picture: the two speakers of the recording")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--data", type=Path, required=True, help="the corpus folder the runs read")
    parser.add_argument("--reader", default="savee")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, help="eval: the first this many folds only")
    parser.add_argument(
        "--planning",
        nargs="+",
        default=[BEFORE, f"{MERGE_GAP:g}:{SPEECH_PAD:g}"],
        help="eval: the detector's plannings tried, GAP:PAD each (default: before, and as now)",
    )
    parser.add_argument("--windows", action="store_true", help="eval: the windowed encoding too")
    parser.add_argument("--no-clips", action="store_true", help="eval: not clip by clip (the same seeds' is known)")
    parser.add_argument("--oracle", action="store_true", help="eval: the true clips' spans as segments too")
    parser.add_argument("--minutes", type=float, default=60.0, help="speed (cut), rttm, picture: recording length")
    parser.add_argument("--pad30-minutes", type=float, default=5.0, help="speed: the recording timed with pad30")
    parser.add_argument("--repeats", type=int, default=1, help="speed: rounds of the variants")
    parser.add_argument("--encodings", nargs="+", choices=("alone", "windows"), default=["alone", "windows"],
                        help="speed: each segment alone, and 30 s windows of the recording")  # fmt: skip
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), help="speed: the encoder's (else the model's)")
    parser.add_argument("--plot-dir", type=Path, default=Path("docs"), help="picture: where recording.png goes")
    parser.add_argument("--smooth", type=int, default=1, help="picture: emotion-predict --smooth")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON the result is added to")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recordings-") as folder:
        result = {"study": args.study, **STUDIES[args.study](args, Path(folder))}
    result |= {"command": "python -m benchmarks.recordings " + " ".join(sys.argv[1:]), "date": time.strftime("%F"),
               "load_average": os.getloadavg(), "machine": machine()}  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k not in ("folds", "truth", "runs")}, indent=2))
    saved = json.loads(args.output.read_text()) if args.output.exists() else []
    key = (args.study, args.reader, args.folds, result.get("precision"))
    saved = [r for r in saved if (r.get("study"), r.get("corpus"), r.get("folds_run"), r.get("precision")) != key]
    args.output.write_text(json.dumps([*saved, result | {"folds_run": args.folds}], indent=2) + "\n")


if __name__ == "__main__":
    main()
