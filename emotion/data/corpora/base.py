"""The reader interface every corpus plugs into, and the manifest of clips it returns.

A reader turns a folder (or a manifest file) of labelled audio into a `Manifest`: one `Clip` per
recording, with its speaker and its emotion in the project's vocabulary. Each reader has its own label
vocabulary (`labels`: the corpus's codes and the emotion each names). A reader of a corpus that encodes its
labels in file names implements `clip(path)`; the walk over the files, the bad-name policy and the class
filter are shared (`CorpusReader.read`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal

from emotion.errors import DataError

log = logging.getLogger(__name__)

#: The six CREMA-D emotions, in the order used for class indices everywhere.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad")
#: Labels some corpora have beyond the six; keep them by adding them to `data.classes`.
EXTRA_EMOTIONS: tuple[str, ...] = ("calm", "surprise", "boredom")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

BadFilePolicy = Literal["skip", "error"]


@dataclass(frozen=True)
class Clip:
    """One labelled recording of the manifest; `copy` > 0 marks the copy-th augmented copy of it.

    `corpus` names its corpus when several are read at once (`data=mix`); its speaker is then `CORPUS:SPEAKER`.
    """

    path: str
    speaker: str
    emotion: str
    sentence: str
    intensity: str
    copy: int = 0
    corpus: str = ""

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)

    def augmented(self, copy: int) -> Clip:
        return replace(self, copy=copy)


class BadName(ValueError):
    """A file name (or a manifest row) that a reader cannot read; the message says why."""


@dataclass
class Manifest:
    """The clips read from a corpus, and what was left out and why."""

    clips: list[Clip]
    dropped_classes: dict[str, int]
    bad_names: int


class CorpusReader:
    """Reads one corpus into a `Manifest`. Subclasses name themselves, give their label vocabulary and `clip`."""

    #: The `data.reader` name, and the corpus's own name, for messages.
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    #: The corpus's label codes, and the emotion of the project's vocabulary each stands for.
    labels: ClassVar[Mapping[str, str]] = {}

    def clip(self, path: Path) -> Clip:
        """The clip of one audio file; BadName saying why if its name (or folder) cannot be read."""
        raise NotImplementedError

    def label(self, code: str) -> str:
        """The emotion a label code stands for; BadName if the vocabulary lacks it."""
        try:
            return self.labels[code]
        except KeyError:
            raise BadName(f"unknown {self.title or self.name} emotion code {code!r}") from None

    def read(
        self, root: str | Path, on_bad_name: BadFilePolicy = "skip", classes: Sequence[str] = EMOTIONS
    ) -> Manifest:
        """Every audio file under `root` (recursively), read by `clip`.

        Names it cannot read are skipped with a warning naming each file (`on_bad_name="skip"`) or stop the read
        naming the file (`"error"`). Clips of emotions outside `classes` are dropped and counted.
        """
        root = Path(root).expanduser()
        clips: list[Clip] = []
        bad: list[tuple[Path, BadName]] = []
        files = audio_files(root)
        for path in files:
            try:
                clips.append(self.clip(path))
            except BadName as exc:
                if on_bad_name == "error":
                    raise DataError(f"{exc}: {path}") from None
                bad.append((path, exc))
        if bad and len(bad) == len(files):  # not one name read: the wrong reader, or the wrong folder
            path, exc = bad[0]
            raise DataError(
                f"the {self.name} reader could read none of the {len(files)} file names under {root} "
                f"(e.g. {path.name}: {exc}): is data={self.name} the corpus in that folder?"
            )
        for path, exc in bad:
            log.warning("skipped %s: %s", path, exc)
        if bad:
            log.warning(
                "skipped %d file(s) whose names the %s reader could not read (each named above)", len(bad), self.name
            )
        return kept_classes(clips, classes, root, self.name, len(bad))


def kept_classes(clips: list[Clip], classes: Sequence[str], root: Path, reader: str, bad: int) -> Manifest:
    """The manifest of the clips of `classes`, the others dropped and counted; DataError if none is left."""
    kept = [c for c in clips if c.emotion in classes]
    dropped = Counter(c.emotion for c in clips if c.emotion not in classes)
    if dropped:
        log.info("dropped clips of classes outside data.classes: %s", dict(dropped))
    if not kept:
        raise DataError(f"no clip of the classes {list(classes)} found under {root} (reader {reader})")
    log.info(
        "read %d clips of %d speakers from %s: %s",
        len(kept),
        len({c.speaker for c in kept}),
        root,
        dict(sorted(Counter(c.emotion for c in kept).items())),
    )
    return Manifest(clips=kept, dropped_classes=dict(dropped), bad_names=bad)


def audio_files(root: Path) -> list[Path]:
    """The audio files under `root`, sorted; DataError if it is not a folder or holds none."""
    if not root.exists():
        raise DataError(f"data folder does not exist: {root}")
    if not root.is_dir():
        raise DataError(f"data root is not a folder: {root}")
    try:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    except OSError as exc:
        raise DataError(f"cannot list data folder {root}: {exc}") from exc
    if not files:
        raise DataError(f"data folder holds no audio files ({', '.join(AUDIO_SUFFIXES)}): {root}")
    return files
