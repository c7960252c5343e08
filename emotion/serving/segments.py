"""The segments of a recording a timeline classifies (`emotion.serving.timeline`): silero-vad's speech, or a
diarization's turns (RTTM or CSV: `read_segments`), fitted to the durations the model was trained on (`plan`)."""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from emotion.errors import DataError
from emotion.serving.streaming import FRAME_SECONDS, VAD_RATE, Scan, one_thread

#: Speech segments closer than this (seconds) are one (the detector's only: a diarization's are kept as given).
MERGE_GAP = 0.15
#: Pause (seconds) kept around each of the detector's segments, as far as halfway to the next: the clips models are
#: trained on hold some silence around their speech (docs/recordings.md measures what it changes).
SPEECH_PAD = 0.3
#: How far (seconds) either side of an even split point the quietest frame is looked for.
QUIET_SEARCH = 1.0
#: The record types of an RTTM file other than SPEAKER: skipped (NIST RTTM; pyannote writes SPEAKER lines only).
OTHER_RTTM_TYPES = frozenset(
    {"SEGMENT", "NOSCORE", "NO_RT_METADATA", "LEXEME", "NON-LEX", "NON-SPEECH", "FILLER", "EDIT", "IP", "SU", "CB",
     "A/P", "SPKR-INFO"}
)  # fmt: skip


@dataclass(frozen=True)
class Segment:
    """A stretch of a recording (seconds from its start), and whose it is (None: the file's speaker)."""

    start: float
    end: float
    speaker: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


def speech_segments(found: Scan) -> list[Segment]:
    """silero-vad's speech segments of a scan (its default thresholds and padding), merged across short pauses,
    each widened by `SPEECH_PAD` into the pauses around it (`pad`)."""
    with one_thread():  # (importing silero_vad sets torch to one thread for good)
        from silero_vad import get_speech_timestamps_from_probs

    assert found.speech is not None, "scan(path, detect=True) first"
    samples = round(found.duration * VAD_RATE)
    stamps = get_speech_timestamps_from_probs(found.speech, sampling_rate=VAD_RATE, audio_length_samples=samples)
    merged = merge([Segment(s["start"] / VAD_RATE, s["end"] / VAD_RATE) for s in stamps], MERGE_GAP)
    return pad(merged, SPEECH_PAD, found.duration)


def pad(segments: Sequence[Segment], seconds: float, duration: float) -> list[Segment]:
    """Segments in time order, not overlapping, each widened by up to `seconds` on either side: no further than
    halfway to its neighbour, nor out of the recording's `duration`."""
    bounds = [0.0, *((a.end + b.start) / 2 for a, b in itertools.pairwise(segments)), duration]
    return [replace(s, start=max(s.start - seconds, bounds[i]), end=min(s.end + seconds, bounds[i + 1]))
            for i, s in enumerate(segments)]  # fmt: skip


def merge(segments: Sequence[Segment], gap: float = MERGE_GAP) -> list[Segment]:
    """Segments in time order, each joined to the one before when both are the same speaker's and the pause
    between them is shorter than `gap` seconds."""
    merged: list[Segment] = []
    for segment in sorted(segments, key=lambda s: (s.start, s.end)):
        if merged and merged[-1].speaker == segment.speaker and segment.start - merged[-1].end < gap:
            merged[-1] = replace(merged[-1], end=max(merged[-1].end, segment.end))
        else:
            merged.append(segment)
    return merged


def plan(
    segments: Sequence[Segment], duration: float, shortest: float, longest: float, levels: np.ndarray | None = None
) -> list[Segment]:
    """The segments the model judges: each within the file, split at its quietest frames (`levels`, dB per 32 ms
    frame; else evenly) into pieces of at most `longest` seconds, each widened around its middle to at least
    `shortest` (as far as the file allows), in time order."""
    pieces: list[Segment] = []
    for segment in segments:
        start, end = max(0.0, segment.start), min(duration, segment.end)
        if end > start:
            pieces += split(replace(segment, start=start, end=end), longest, levels)
    return sorted((widen(piece, shortest, duration) for piece in pieces), key=lambda s: (s.start, s.end))


def split(segment: Segment, longest: float, levels: np.ndarray | None = None) -> list[Segment]:
    """`segment` in pieces of at most `longest` seconds: as many as it takes, each cut near where an even split
    would put it (within `QUIET_SEARCH` s, and a quarter of a piece), at the quietest frame there."""
    pieces: list[Segment] = []
    start = segment.start
    while segment.end - start > longest:
        count = math.ceil((segment.end - start) / longest)
        even = (segment.end - start) / count
        reach = min(QUIET_SEARCH, even / 4)
        cut = quietest(levels, start + even - reach, min(start + longest, start + even + reach))
        cut = start + even if cut is None else cut
        pieces.append(replace(segment, start=start, end=cut))
        start = cut
    return [*pieces, replace(segment, start=start)]


def quietest(levels: np.ndarray | None, start: float, end: float) -> float | None:
    """The middle of the quietest whole frame between `start` and `end` seconds (None: no such frame)."""
    if levels is None or not len(levels):
        return None
    first, last = math.ceil(start / FRAME_SECONDS), min(len(levels), math.floor(end / FRAME_SECONDS))
    if last <= first:
        return None
    return (first + int(np.argmin(levels[first:last])) + 0.5) * FRAME_SECONDS


def widen(segment: Segment, shortest: float, duration: float) -> Segment:
    """`segment` widened around its middle to `shortest` seconds, within the file's `duration`."""
    if segment.duration >= shortest:
        return segment
    start = max(0.0, (segment.start + segment.end - shortest) / 2)
    end = min(duration, start + shortest)
    return replace(segment, start=max(0.0, end - shortest), end=end)


def read_segments(path: str | Path) -> dict[str | None, list[Segment]]:
    """A diarization's segments by the file they are of (RTTM: its file field; CSV: its `file` column if it has
    one, else None, for every file): RTTM (`SPEAKER <file> <channel> <start> <duration> <NA> <NA> <speaker> ...`,
    pyannote's output) if the file ends in `.rttm` or its first line is a SPEAKER record, else a CSV of columns
    `start`, `end` (seconds) and `speaker` (optional: the file's speaker). DataError naming the line of a bad one.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no segments file {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read segments file {path}: {exc}") from None
    first = next((line.split() for line in text.splitlines() if line.strip()), [""])
    if path.suffix.lower() == ".rttm" or first[0] in OTHER_RTTM_TYPES | {"SPEAKER"}:
        return _rttm_segments(text, path)
    return _csv_segments(text, path)


def _rttm_segments(text: str, path: Path) -> dict[str | None, list[Segment]]:
    found: dict[str | None, list[Segment]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or fields[0] in OTHER_RTTM_TYPES:
            continue
        where = f"{path} line {number}"
        if fields[0] != "SPEAKER" or len(fields) < 8:
            raise DataError(
                f"{where}: not an RTTM SPEAKER record (SPEAKER <file> <channel> <start> <duration> <NA> <NA> "
                f"<speaker> ...): {line.strip()[:80]!r}"
            )
        start, duration = _seconds(fields[3], f"{where}: start"), _seconds(fields[4], f"{where}: duration")
        if duration <= 0:
            raise DataError(f"{where}: duration {fields[4]} is not positive")
        found.setdefault(fields[1], []).append(Segment(start, start + duration, fields[7]))
    if not found:
        raise DataError(f"{path} holds no RTTM SPEAKER record")
    return found


def _csv_segments(text: str, path: Path) -> dict[str | None, list[Segment]]:
    rows = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    names = [name.strip() for name in rows.fieldnames or []]
    if not {"start", "end"} <= set(names):
        raise DataError(
            f"{path}: give RTTM (a .rttm file) or a CSV whose header names start, end (seconds) and speaker "
            f"(optional), and file (to cover several files); its header is {','.join(names)!r}"
        )
    found: dict[str | None, list[Segment]] = {}
    for number, row in enumerate(rows, start=2):
        row = {str(key).strip(): (value or "").strip() for key, value in row.items()}
        where = f"{path} line {number}"
        start, end = _seconds(row["start"], f"{where}: start"), _seconds(row["end"], f"{where}: end")
        if end <= start:
            raise DataError(f"{where}: end {row['end']} is not after start {row['start']}")
        found.setdefault(row.get("file") or None, []).append(Segment(start, end, row.get("speaker") or None))
    if not found:
        raise DataError(f"{path} holds no segment")
    return found


def _seconds(value: str, what: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise DataError(f"{what} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise DataError(f"{what} {value!r} is not a number of seconds from the recording's start")
    return seconds


def segments_of(table: Mapping[str | None, list[Segment]], path: Path, files: int, source: str) -> list[Segment]:
    """The segments `table` (`read_segments`) gives of the audio file `path`: those of its stem or name, or, for
    a single file, those of a table that covers one file only; DataError if it has none."""
    for key in (path.stem, path.name, str(path)):
        if key in table:
            return table[key]
    if None in table and files == 1:
        return table[None]
    if files == 1 and len(table) == 1:
        return next(iter(table.values()))
    named = ", ".join(sorted(str(key) for key in table if key is not None)[:5])
    raise DataError(f"{source} has no segment of {path.name} (it names {named or 'no file: give a CSV a file column'})")
