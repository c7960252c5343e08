"""Corpus readers: turn a folder of labelled audio into a manifest of clips.

The embedded synthetic corpus is written in the CREMA-D naming scheme, so the
CREMA-D reader serves both it and a user's copy of the real corpus.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from emotion.errors import DataError

log = logging.getLogger(__name__)

#: The six CREMA-D emotions, in the order used for class indices everywhere.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad")

#: CREMA-D emotion codes and their names in our vocabulary.
CREMA_D_EMOTION_CODES: dict[str, str] = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
#: CREMA-D's twelve sentence codes.
CREMA_D_SENTENCES: tuple[str, ...] = (
    "IEO",
    "TIE",
    "IOM",
    "IWW",
    "TAI",
    "MTI",
    "IWL",
    "ITH",
    "DFA",
    "ITS",
    "TSI",
    "WSI",
)
#: CREMA-D intensity codes: low, medium, high, unspecified.
CREMA_D_LEVELS: tuple[str, ...] = ("LO", "MD", "HI", "XX")

_CREMA_D_NAME = re.compile(r"^(?P<speaker>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")

BadFilePolicy = Literal["skip", "error"]


@dataclass(frozen=True)
class Clip:
    """One labelled recording of the manifest."""

    path: str
    speaker: str
    emotion: str
    sentence: str
    intensity: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def crema_d_clip(path: Path) -> Clip | None:
    """Parse a CREMA-D file name (`1001_DFA_ANG_XX.wav`); None if it does not follow the scheme."""
    match = _CREMA_D_NAME.match(path.stem)
    if match is None or match["emotion"] not in CREMA_D_EMOTION_CODES or match["level"] not in CREMA_D_LEVELS:
        return None
    return Clip(
        path=str(path),
        speaker=match["speaker"],
        emotion=CREMA_D_EMOTION_CODES[match["emotion"]],
        sentence=match["sentence"],
        intensity=match["level"],
    )


def read_crema_d(
    root: str | Path,
    on_bad_name: BadFilePolicy = "skip",
    classes: tuple[str, ...] = EMOTIONS,
) -> list[Clip]:
    """Read every audio file under `root` (recursively) named in the CREMA-D scheme.

    Files whose names fall outside the scheme are skipped with one counted warning
    (`on_bad_name="skip"`) or stop the read naming the first one (`"error"`).
    Clips of emotions outside `classes` are dropped.
    """
    root = Path(root)
    files = _audio_files(root)
    clips: list[Clip] = []
    bad_names: list[Path] = []
    for path in files:
        clip = crema_d_clip(path)
        if clip is None:
            if on_bad_name == "error":
                raise DataError(f"file name outside the CREMA-D scheme SPEAKER_SENTENCE_EMOTION_LEVEL: {path}")
            bad_names.append(path)
        elif clip.emotion in classes:
            clips.append(clip)
    if bad_names:
        log.warning(
            "skipped %d file(s) whose names are outside the CREMA-D scheme, e.g. %s", len(bad_names), bad_names[0]
        )
    if not clips:
        raise DataError(f"no clip of the classes {list(classes)} found under {root}")
    log.info(
        "read %d clips of %d speakers from %s: %s",
        len(clips),
        len({c.speaker for c in clips}),
        root,
        dict(sorted(Counter(c.emotion for c in clips).items())),
    )
    return clips


def _audio_files(root: Path) -> list[Path]:
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
