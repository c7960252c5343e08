"""A corpus of your own, described by a manifest: CSV (or TSV) with a header, JSON (a list of objects) or JSON lines.

    path,label,speaker,session
    Ses01F_impro01/Ses01F_impro01_F000.wav,neu,Ses01F,1
    ...

`path` (absolute, or relative to the manifest's folder), `label` and `speaker` are required; `sentence` and
`intensity` are read when present; other columns (sessions, dimensional ratings) are allowed and left aside.
Labels are the project's emotion names (any case) or codes of your own given in `data.reader_options.labels`
(`{neu: neutral, ang: angry, exc: happy}`, as IEMOCAP users merge excitement into happiness).

A bad row (a required value missing, an unknown label, no file at its path) is logged with its line number
and skipped (`on_bad_row: skip`) or stops the read (`error`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from emotion.data.corpora.base import (
    EMOTIONS,
    EXTRA_EMOTIONS,
    BadFilePolicy,
    BadName,
    Clip,
    CorpusReader,
    Manifest,
    kept_classes,
)
from emotion.errors import ConfigError, DataError

log = logging.getLogger(__name__)

REQUIRED = ("path", "label", "speaker")
SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")


class ManifestReader(CorpusReader):
    """Reads a manifest file (`data.root`) row by row; its label vocabulary is yours (`labels`)."""

    name = "manifest"
    title = "manifest"

    def __init__(self, labels: Mapping[str, str] | None = None, on_bad_row: BadFilePolicy = "skip") -> None:
        known = (*EMOTIONS, *EXTRA_EMOTIONS)
        unknown = {code: emotion for code, emotion in (labels or {}).items() if emotion not in known}
        if unknown:
            raise ConfigError(f"data.reader_options.labels maps to unknown classes {unknown}: choose from {known}")
        if on_bad_row not in ("skip", "error"):
            raise ConfigError(f"unknown data.reader_options.on_bad_row {on_bad_row!r}: choose 'skip' or 'error'")
        self.labels = {name: name for name in known} | {str(k).lower(): v for k, v in (labels or {}).items()}
        self.on_bad_row = on_bad_row

    def read(
        self, root: str | Path, on_bad_name: BadFilePolicy = "skip", classes: Sequence[str] = EMOTIONS
    ) -> Manifest:
        """The clips of the manifest file `root`; `on_bad_name` is not used (rows have `on_bad_row`)."""
        manifest = Path(root).expanduser()
        clips: list[Clip] = []
        bad: list[str] = []
        rows = list(manifest_rows(manifest))
        for where, row in rows:
            try:
                clips.append(self.row_clip(row, manifest.parent))
            except BadName as exc:
                message = f"{manifest.name} {where}: {exc}"
                if self.on_bad_row == "error":
                    raise DataError(message) from None
                warn_once(manifest, f"skipped {message}")
                bad.append(message)
        if bad and len(bad) == len(rows):
            raise DataError(f"not one row of {manifest} could be read (e.g. {bad[0]})")
        if bad:
            warn_once(manifest, f"skipped {len(bad)} bad row(s) of {manifest} (each named above)")
        return kept_classes(clips, classes, manifest, self.name, len(bad))

    def row_clip(self, row: Mapping[str, object], folder: Path) -> Clip:
        """The clip of one row; BadName saying what is wrong with it."""
        values = {key: str(row.get(key) or "").strip() for key in (*REQUIRED, "sentence", "intensity")}
        missing = [key for key in REQUIRED if not values[key]]
        if missing:
            raise BadName(f"no {' or '.join(missing)}")
        path = Path(values["path"]).expanduser()
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise BadName(f"no audio file at {path}")
        emotion = self.labels.get(values["label"].lower())
        if emotion is None:
            raise BadName(f"unknown label {values['label']!r}: give it a class in data.reader_options.labels")
        return Clip(str(path), values["speaker"], emotion, values["sentence"], values["intensity"] or "XX")


#: The warnings given in this process, by manifest: a cross-validation reads its manifest once per fold.
_warned: set[tuple[str, str]] = set()


def warn_once(manifest: Path, message: str) -> None:
    """Log a warning about `manifest` the first time this process gives it."""
    key = (str(manifest.resolve()), message)
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def manifest_rows(path: Path) -> Iterator[tuple[str, Mapping[str, object]]]:
    """(`line N` or `entry N`, row) for each row of a CSV, TSV, JSON or JSON-lines manifest."""
    if not path.is_file():
        raise DataError(f"data.root={path} is not a manifest file ({', '.join(SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"unknown manifest format {path.name}: name it {' or '.join(SUFFIXES)}")
    with path.open(newline="", encoding="utf-8") as file:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(file, delimiter="\t" if suffix == ".tsv" else ",")
            absent = [key for key in REQUIRED if key not in (reader.fieldnames or [])]
            if absent:
                raise DataError(f"{path} has no column {', '.join(absent)} (its header: {reader.fieldnames})")
            for row in reader:
                yield f"line {reader.line_num}", row
        elif suffix == ".jsonl":
            for number, line in enumerate(file, start=1):
                if line.strip():
                    yield f"line {number}", _json_object(line, path, f"line {number}")
        else:
            entries = _json(file.read(), path, "the file")
            if not isinstance(entries, list):
                raise DataError(f"{path} must hold a JSON list of objects, one per clip")
            for number, entry in enumerate(entries, start=1):
                yield f"entry {number}", entry if isinstance(entry, dict) else {}


def _json_object(text: str, path: Path, where: str) -> Mapping[str, object]:
    value = _json(text, path, where)
    return value if isinstance(value, dict) else {}


def _json(text: str, path: Path, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} {where} is not JSON: {exc}") from None
