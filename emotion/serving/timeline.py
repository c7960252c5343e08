"""Emotions over time in recordings of any length (`emotion-predict --timeline`, and the served model's timeline
requests: `emotion.serving.served_timeline`): one row per segment of speech.

    audio file (WAV, FLAC, OGG, MP3; any length)
      -> scan (`emotion.serving.streaming`): decoded block by block at 16 kHz (`stream`: never the whole file in
         memory), silero-vad's speech probability and the level (dB) of each 32 ms frame
      -> segments (`emotion.serving.segments`): silero-vad's speech timestamps merged across pauses under
         `MERGE_GAP`, or a diarization's (`read_segments`: RTTM or CSV, kept as given); each split at its quietest
         frames into pieces no longer than the model judges at once (`longest_segment`) and widened to the
         shortest it was trained on
      -> features: decoded block by block again, at the model's rate, each segment's samples cut as the stream
         passes it and the model's front end run on `GROUP_SECONDS` of them at a time (`segment_features`)
      -> classify: `EmotionRecognizer.classify_inputs` on every segment at once: a speaker-adaptive model
         normalises each speaker's segments by that speaker's own statistics in this recording (label-free; no
         profiles store)
      -> one row per segment: file, start, end, speaker, emotion, confidence, normalization, prob_<class>

`timeline` is `planned` (scan and segments) then `judged` (cut and classify): a caller may bound the plan between.

Memory: one block of the file at a time while decoding (`BLOCK_SECONDS`), and the audio of one group of segments
while their features are computed; the features of every segment (pooled: far smaller than its audio) until classified.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from emotion.errors import ConfigError, DataError
from emotion.serving.files import PartialPredictions
from emotion.serving.recognizer import Classification, clips_in, is_silent
from emotion.serving.segments import Segment, plan, read_segments, segments_of, speech_segments
from emotion.serving.streaming import Scan, cut_each, duration, scan

if TYPE_CHECKING:
    import pandas as pd

    from emotion.serving.recognizer import EmotionRecognizer

#: The longest segment judged at once (seconds), whatever longer clips the model was trained on.
MAX_SEGMENT = 8.0
#: Seconds of speech whose features are computed together (`segment_features`): about 8 MB of audio at 16 kHz
#: held at once, among which the encoder batches segments of similar length (`features.batch_seconds`).
GROUP_SECONDS = 120.0
#: The columns of a timeline before the classes' probabilities.
COLUMNS = ("file", "start", "end", "speaker", "emotion", "confidence", "normalization")


@dataclass
class Timeline:
    """The segments of some files (one row each, `COLUMNS` then `prob_<class>`), each file's duration (seconds),
    and one message per file skipped."""

    frame: pd.DataFrame
    durations: dict[str, float]
    skipped: list[str]


def longest_segment(recognizer: EmotionRecognizer, longest: float = MAX_SEGMENT) -> float:
    """The longest segment (seconds) given the model at once: `longest`, no more than its `max_duration`, and no
    more than its window for a model that judges one centre window of each clip (the rest would go unheard)."""
    features = recognizer.features
    seconds = min(longest, recognizer.front_end.max_duration)
    if not features.whole_clip and not features.window.whole_utterance:
        seconds = min(seconds, features.n_samples / recognizer.sample_rate)
    if seconds < recognizer.front_end.min_duration:
        raise ConfigError(
            f"segments of at most {seconds:g} s are shorter than the model's data.min_duration="
            f"{recognizer.front_end.min_duration:g} s"
        )
    return seconds


def timeline(
    recognizer: EmotionRecognizer,
    path: str | Path,
    speaker: str | None = None,
    given: Sequence[Segment] | None = None,
    longest: float = MAX_SEGMENT,
    group_seconds: float = GROUP_SECONDS,
) -> tuple[pd.DataFrame, float]:
    """One file's rows (`COLUMNS`, then `prob_<class>`), and its duration (seconds): `planned` then `judged`.

    `speaker`: the speaker of segments of no named speaker (default: the file's stem).
    """
    path = Path(path)
    segments, seconds = planned(recognizer, path, speaker or path.stem, given, longest)
    return judged(recognizer, path, segments, group_seconds), seconds


def planned(
    recognizer: EmotionRecognizer,
    path: Path,
    speaker: str,
    given: Sequence[Segment] | None = None,
    longest: float = MAX_SEGMENT,
) -> tuple[list[Segment], float]:
    """The segments of a file the model judges, in time order, and the file's duration (seconds).

    They are silero-vad's (or `given`: a diarization's, their speakers named or None: `speaker`'s), split to at most
    `longest` seconds and widened to the model's shortest (`emotion.serving.segments.plan`).
    """
    shortest, longest = recognizer.front_end.min_duration, longest_segment(recognizer, longest)
    if given is None:
        found = scan(path, detect=True)
        candidates = speech_segments(found)
    else:
        candidates = list(given)
        too_long = any(s.duration > longest for s in candidates)
        found = scan(path, detect=False) if too_long else Scan(duration(path), None, np.zeros(0))
    pieces = plan(candidates, found.duration, shortest, longest, found.levels)
    return [replace(s, speaker=s.speaker or speaker) for s in pieces], found.duration


@torch.no_grad()
def judged(
    recognizer: EmotionRecognizer, path: Path, segments: Sequence[Segment], group_seconds: float = GROUP_SECONDS
) -> pd.DataFrame:
    """The rows of a file's `planned` segments: their features computed `group_seconds` of speech at a time as a
    second streamed pass cuts them (`segment_features`: only those segments' audio in memory), then all classified
    at once. A speaker-adaptive model normalises each speaker's segments by their own statistics (those segments';
    under `normalize.min_clips` of them, blended with the non-adaptive answer, as the `normalization` column says).
    """
    import pandas as pd

    classes = [f"prob_{name}" for name in recognizer.classes]
    indices, silent, raw = segment_features(recognizer, path, segments, group_seconds)
    if not indices:  # typed columns: numbers stay numbers when joined to other files' rows
        text = ("file", "speaker", "emotion", "normalization")
        return pd.DataFrame({name: pd.Series(dtype=object if name in text else float) for name in [*COLUMNS, *classes]})
    kept = [segments[i] for i in indices]
    probabilities, ways = recognizer.classify_inputs(raw, [s.speaker for s in kept])
    frame = Classification(probabilities, silent, recognizer.classes, ways).frame().drop(columns="silent")
    frame.insert(0, "speaker", [s.speaker for s in kept])
    frame.insert(0, "end", [s.end for s in kept])
    frame.insert(0, "start", [s.start for s in kept])
    frame.insert(0, "file", str(path))
    return frame.set_axis(indices).sort_index().reset_index(drop=True)[[*COLUMNS, *classes]]


def segment_features(
    recognizer: EmotionRecognizer, path: Path, segments: Sequence[Segment], group_seconds: float
) -> tuple[list[int], list[bool], dict[str, torch.Tensor]]:
    """The index of each segment with samples (in the order the stream passed them), whether it is silent, and the
    model's front-end outputs of them all (one clip a segment), computed `group_seconds` of speech at a time."""
    spans = [(s.start, s.end) for s in segments]
    waves = ((index, wave) for index, wave in cut_each(path, spans, recognizer.sample_rate) if len(wave))
    indices: list[int] = []
    silent: list[bool] = []
    parts: list[dict[str, torch.Tensor]] = []
    for group in grouped(waves, round(group_seconds * recognizer.sample_rate)):
        indices += [index for index, _ in group]
        silent += [is_silent(wave) for _, wave in group]
        parts.append(recognizer.front_end.inputs([recognizer.front_end.prepare(wave) for _, wave in group]))
        trim_heap()
    return indices, silent, joined_inputs(parts)


def grouped(waves: Iterator[tuple[int, torch.Tensor]], samples: int) -> Iterator[list[tuple[int, torch.Tensor]]]:
    """Consecutive (index, wave) pairs in groups of at least `samples` samples (the last: what is left)."""
    group: list[tuple[int, torch.Tensor]] = []
    held = 0
    for index, wave in waves:
        group.append((index, wave))
        held += len(wave)
        if held >= samples:
            yield group
            group, held = [], 0
    if group:
        yield group


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's `malloc_trim`). The encoder's activations for
    segments of every length leave glibc's heap fragmented: over an hour of speech the process kept 0.8 GB it
    no longer used (docs/recordings.md). A no-op where the C library is not glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def joined_inputs(parts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Front-end outputs of consecutive groups of clips as one (a windowed front end's `segments`, the clip of each
    window, counted on across the groups); empty for no group."""
    if not parts:
        return {}
    offsets = np.cumsum([0, *(clips_in(part) for part in parts[:-1])]).tolist()
    return {
        name: torch.cat([part[name] + offset if name == "segments" else part[name]
                         for part, offset in zip(parts, offsets, strict=True)])
        for name in parts[0]
    }  # fmt: skip


def timelines(
    recognizer: EmotionRecognizer,
    files: Sequence[Path],
    speakers: Sequence[str | None] | None = None,
    segments: str | Path | Mapping[str | None, list[Segment]] | None = None,
    on_bad_file: str = "error",
    group_seconds: float = GROUP_SECONDS,
) -> Timeline:
    """Each file's timeline (`timeline`), one after the other, rows in the files' order.

    `speakers`: each file's speaker (None: its stem). `segments`: a diarization (a file `read_segments` reads, or
    what it read) whose segments replace the detector's. A file that cannot be decoded is skipped with a warning,
    or under `on_bad_file="error"` stops it (`PartialPredictions`, holding the rows made before).
    """
    import pandas as pd

    speakers = list(speakers) if speakers is not None else [None] * len(files)
    table = read_segments(segments) if isinstance(segments, (str, Path)) else segments
    source = str(segments) if isinstance(segments, (str, Path)) else "the segments"
    frames: list[pd.DataFrame] = []
    durations: dict[str, float] = {}
    skipped: list[str] = []
    for path, speaker in zip(files, speakers, strict=True):
        given = segments_of(table, path, len(files), source) if table is not None else None
        try:
            frame, durations[str(path)] = timeline(recognizer, path, speaker, given, group_seconds=group_seconds)
        except DataError as exc:
            if on_bad_file == "error":
                made = [frame for frame in frames if not frame.empty]
                made = pd.concat(made, ignore_index=True) if made else pd.DataFrame()
                raise PartialPredictions(f"{exc} ({len(frames)} files predicted before it)", made) from None
            skipped.append(str(exc))
            print(f"warning: skipped {path}: {exc}", file=sys.stderr)
            continue
        if frame.empty:
            print(f"warning: no speech found in {path}", file=sys.stderr)
        frames.append(frame)
    if not frames:
        raise DataError(f"no file could be predicted ({len(skipped)} skipped), e.g. {skipped[0]}")
    found = [frame for frame in frames if not frame.empty] or frames[:1]
    return Timeline(pd.concat(found, ignore_index=True), durations, skipped)


def smooth(frame: pd.DataFrame, segments: int) -> pd.DataFrame:
    """`frame` with each `prob_<class>` replaced by its centred moving average over `segments` segments of the same
    file and speaker (in time order; fewer at the ends); 1 or less: unchanged."""
    if segments <= 1 or frame.empty:
        return frame
    columns = [name for name in frame.columns if name.startswith("prob_")]
    smoothed = frame.copy()
    for _, rows in frame.sort_values("start").groupby(["file", "speaker"], sort=False):
        averaged = rows[columns].rolling(segments, center=True, min_periods=1).mean()
        smoothed.loc[rows.index, columns] = averaged
    return smoothed
