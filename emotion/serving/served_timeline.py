"""The served model's timelines: a request with `params={"timeline": true}` gets one row per segment of speech of
each recording it sends (`emotion.serving.timeline`, the path `emotion-predict --timeline` takes).

A row is a recording: `audio` (a file's bytes, base64: written to a temporary file, removed after the request) or a
`path` on the host (`EMOTION_AUDIO_DIRS`), its `speaker` (the speaker of its segments of no named speaker; default
`row N`), and optionally `segments`: a diarization, a list of `{"start": s, "end": s, "speaker": name}` (seconds
from the recording's start; `speaker` optional) that replaces silero-vad's. Bounds: the recordings of a request last
at most `EMOTION_MAX_TIMELINE_SECONDS` together (read from their headers, before anything is decoded), and give at
most `EMOTION_MAX_SEGMENTS` segments (those sent, then those planned, before any is classified) lasting no longer
than that together. The answer: `row` (the request row's number), then the CLI's columns after `file`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion.errors import DataError
from emotion.serving.profiles import speaker_name
from emotion.serving.requests import decode_base64, given, missing, readable_path, refusal
from emotion.serving.segments import Segment
from emotion.serving.streaming import duration
from emotion.serving.timeline import judged, planned

if TYPE_CHECKING:
    import pandas as pd

    from emotion.serving.recognizer import EmotionRecognizer

#: The longest audio (seconds, a request's recordings together) a timeline request may send (default 3600).
MAX_SECONDS = "EMOTION_MAX_TIMELINE_SECONDS"
DEFAULT_MAX_SECONDS = 3600.0
#: The most segments a timeline request may send, or be answered with (default 2000).
MAX_SEGMENTS = "EMOTION_MAX_SEGMENTS"
DEFAULT_MAX_SEGMENTS = 2000
#: The keys of one sent segment.
SEGMENT_KEYS = ("start", "end", "speaker")
SEGMENT_SHAPE = '[{"start": 0.0, "end": 2.5, "speaker": "alice"}, ...] (seconds from the recording\'s start)'


@dataclass
class Recording:
    """One row of a timeline request: its file on the host, its speaker, and the segments it sent (None: found)."""

    path: Path
    speaker: str
    segments: list[Segment] | None


def limits() -> tuple[float, int]:
    """The host's bounds on a timeline request: seconds of audio, and segments."""
    seconds = float(os.environ.get(MAX_SECONDS) or DEFAULT_MAX_SECONDS)
    return seconds, int(os.environ.get(MAX_SEGMENTS) or DEFAULT_MAX_SEGMENTS)


def served_timeline(recognizer: EmotionRecognizer, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The timeline rows of a request's recordings (rows already checked by `checked_rows`), in the rows' order."""
    import pandas as pd

    max_seconds, max_segments = limits()
    with tempfile.TemporaryDirectory(prefix="emotion-timeline-") as folder:
        recordings, seconds = [], 0.0
        for number, row in enumerate(rows):
            with refused_in_one_line(number, len(rows), Path(folder)):
                recordings.append(recording(row, number, Path(folder), max_segments))
                seconds += duration(recordings[-1].path)  # from its header: nothing decoded yet
            if seconds > max_seconds:
                raise refusal(too_long(seconds, number, max_seconds))
        plans = []
        for number, found in enumerate(recordings):
            with refused_in_one_line(number, len(rows), Path(folder)):
                plans.append(planned(recognizer, found.path, found.speaker, found.segments)[0])
        check_planned([segment for plan in plans for segment in plan], max_seconds, max_segments)
        frames = []
        for number, (found, plan) in enumerate(zip(recordings, plans, strict=True)):
            with refused_in_one_line(number, len(rows), Path(folder)):
                frames.append(judged(recognizer, found.path, plan).drop(columns="file"))
            frames[-1].insert(0, "row", number)
    return pd.concat(frames, ignore_index=True)


def too_long(seconds: float, number: int, max_seconds: float) -> str:
    """Why a request's recordings (rows 0 to `number`) lasting `seconds` together are refused."""
    which = "the recording sent (`audio` or `path`) lasts" if number == 0 else f"rows 0 to {number} last"
    return f"{which} {seconds:.1f} s, longer than the {max_seconds:g} s a timeline takes ({MAX_SECONDS})"


def recording(row: dict[str, Any], number: int, folder: Path, max_segments: int) -> Recording:
    """A request row as a recording: its file (bytes sent written under `folder`), speaker and segments."""
    segments = sent_segments(row.get("segments"), max_segments)
    speaker = speaker_name(row.get("speaker")) or f"row {number}"
    audio, path = row.get("audio"), row.get("path")
    if given(audio):
        written = folder / f"{number}.sent"
        written.write_bytes(decode_base64(audio))
        return Recording(written, speaker, segments)
    if audio == "":
        raise DataError("`audio` is empty: the file sent holds no bytes")
    if given(path):
        return Recording(readable_path(path), speaker, segments)
    raise DataError("a timeline's row takes a recording as a file: `audio` (its bytes, base64) or a `path`")


def sent_segments(value: Any, max_segments: int) -> list[Segment] | None:
    """A row's `segments`, checked: None if left out; DataError naming the first bad one."""
    if missing(value):
        return None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise DataError(f"`segments` must be a list of segments: {SEGMENT_SHAPE}")
    if len(value) > max_segments:
        raise DataError(f"`segments` holds {len(value)} segments, more than the {max_segments} a timeline takes "
                        f"({MAX_SEGMENTS})")  # fmt: skip
    return [segment(item, index) for index, item in enumerate(value)]


def segment(item: dict[str, Any], index: int) -> Segment:
    """One sent segment, checked; DataError naming it (`segments[index]`)."""
    where = f"`segments[{index}]`"
    unknown = sorted(str(key) for key in item if key not in SEGMENT_KEYS)
    if unknown:
        raise DataError(f"{where} has unknown key(s) {unknown}: a segment takes {list(SEGMENT_KEYS)}")
    start, end = from_start(item.get("start"), f"{where}.start"), from_start(item.get("end"), f"{where}.end")
    if end <= start:
        raise DataError(f"{where}: end {end:g} is not after start {start:g}")
    try:
        return Segment(start, end, speaker_name(item.get("speaker")))
    except DataError as exc:
        raise DataError(f"{where}.speaker: {exc}") from None


def from_start(value: Any, what: str) -> float:
    """A number of seconds from the recording's start; DataError naming `what` otherwise."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise DataError(f"{what} must be a number of seconds from the recording's start")
    return float(value)


def check_planned(segments: list[Segment], max_seconds: float, max_segments: int) -> None:
    """Refusal if the segments a request's recordings would be judged by are more, or last longer, than allowed."""
    if len(segments) > max_segments:
        raise refusal(f"the recordings give {len(segments)} segments to classify, more than the {max_segments} a "
                      f"timeline answers ({MAX_SEGMENTS}): send shorter recordings, or fewer `segments`")  # fmt: skip
    total = sum(s.duration for s in segments)
    if total > max_seconds:
        raise refusal(f"`segments` cover {total:.1f} s, longer than the {max_seconds:g} s a timeline takes "
                      f"({MAX_SECONDS}): send segments that overlap less")  # fmt: skip


@contextmanager
def refused_in_one_line(number: int, rows: int, folder: Path) -> Iterator[None]:
    """A DataError inside as one line naming the row (of several), never the temporary folder of the bytes sent."""
    try:
        yield
    except DataError as exc:
        message = str(exc)
        for sent in folder.iterdir():
            message = message.replace(f"audio file {sent}", "the audio file sent in `audio`")
            message = message.replace(f"'{sent}'", "it").replace(str(sent), "it")
        message = message.replace(str(folder), "a temporary folder")
        raise refusal(f"row {number}: {message}" if rows > 1 else message) from None
