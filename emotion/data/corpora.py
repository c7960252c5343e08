"""Corpus readers: turn a folder of labelled audio into a manifest of clips.

Each corpus encodes speaker and emotion in its file names; a parser per corpus
reads them into one vocabulary. The embedded synthetic corpus is written in the
CREMA-D naming scheme, so the CREMA-D parser serves it too.

| corpus  | file name                  | speaker          | labels beyond the six classes |
|---------|----------------------------|------------------|-------------------------------|
| CREMA-D | `1001_DFA_ANG_XX.wav`      | 1001 (91 actors) |                               |
| RAVDESS | `03-01-05-01-02-01-12.wav` | actor 12 (24)    | calm, surprise                |
| TESS    | `OAF_back_angry.wav`       | OAF, YAF (2)     | surprise (`ps`)               |
| SAVEE   | `DC_a01.wav`, `DC/a01.wav` | DC, JE, JK, KL   | surprise (`su`)               |
| EmoDB   | `03a01Fa.wav`              | 03 (10 speakers) | boredom (`L`)                 |

Real distributions are irregular: names are read without regard to case
(`dc_SA01.WAV`), and where a corpus unpacks into folders that name speaker and
emotion (TESS's `OAF_angry/`, SAVEE's `AudioData/DC/`), the folder is read too,
so a file whose own name has a typo (TESS's `OA_bite_neutral.wav` in
`OAF_neutral/`) keeps its labels. Only a file that neither its name nor its
folder can label is skipped, and the log names it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from emotion.errors import DataError

log = logging.getLogger(__name__)

#: The six CREMA-D emotions, in the order used for class indices everywhere.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad")
#: Labels some corpora have beyond the six; keep them by adding them to `data.classes`.
EXTRA_EMOTIONS: tuple[str, ...] = ("calm", "surprise", "boredom")

CREMA_D_EMOTION_CODES: dict[str, str] = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
#: CREMA-D's twelve sentence codes.
CREMA_D_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
#: CREMA-D intensity codes: low, medium, high, unspecified.
CREMA_D_LEVELS: tuple[str, ...] = ("LO", "MD", "HI", "XX")
RAVDESS_EMOTION_CODES = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
TESS_EMOTION_CODES = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "ps": "surprise",
    "pleasant_surprise": "surprise",
    "pleasant_surprised": "surprise",
    "surprise": "surprise",
    "surprised": "surprise",
}
SAVEE_EMOTION_CODES = {
    "a": "angry",
    "d": "disgust",
    "f": "fear",
    "h": "happy",
    "n": "neutral",
    "sa": "sad",
    "su": "surprise",
}
EMODB_EMOTION_CODES = {
    "W": "angry",
    "E": "disgust",
    "A": "fear",
    "F": "happy",
    "N": "neutral",
    "T": "sad",
    "L": "boredom",
}

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")

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
    """A file name that a corpus parser cannot read; the message says why."""


def _label(codes: dict[str, str], code: str, corpus: str) -> str:
    try:
        return codes[code]
    except KeyError:
        raise BadName(f"unknown {corpus} emotion code {code!r}") from None


_CREMA_D = re.compile(r"^(?P<speaker>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")


def crema_d_clip(path: Path) -> Clip:
    """`1001_DFA_ANG_XX`: speaker, sentence, emotion, intensity."""
    match = _CREMA_D.match(path.stem)
    if match is None:
        raise BadName("name outside the CREMA-D scheme SPEAKER_SENTENCE_EMOTION_LEVEL")
    if match["level"] not in CREMA_D_LEVELS:
        raise BadName(f"unknown CREMA-D intensity code {match['level']!r}")
    emotion = _label(CREMA_D_EMOTION_CODES, match["emotion"], "CREMA-D")
    return Clip(str(path), match["speaker"], emotion, match["sentence"], match["level"])


_RAVDESS = re.compile(
    r"^(?P<modality>\d\d)-(?P<channel>\d\d)-(?P<emotion>\d\d)-(?P<intensity>\d\d)-"
    r"(?P<statement>\d\d)-(?P<repetition>\d\d)-(?P<actor>\d\d)$"
)


def ravdess_clip(path: Path) -> Clip:
    """`03-01-05-01-02-01-12`: modality, channel (01 speech, 02 song), emotion, intensity, statement, take, actor."""
    match = _RAVDESS.match(path.stem)
    if match is None:
        raise BadName("name outside the RAVDESS scheme MM-VC-EM-IN-ST-RE-AC")
    emotion = _label(RAVDESS_EMOTION_CODES, match["emotion"], "RAVDESS")
    intensity = {"01": "normal", "02": "strong"}.get(match["intensity"], match["intensity"])
    return Clip(str(path), f"actor{match['actor']}", emotion, f"statement{match['statement']}", intensity)


_TESS = re.compile(r"^(?P<speaker>[OY]AF)_(?P<word>[A-Za-z]+)_(?P<emotion>[A-Za-z_]+)$", re.IGNORECASE)
_TESS_FOLDER = re.compile(r"^(?P<speaker>[OY]AF)_(?P<emotion>[A-Za-z_]+)$", re.IGNORECASE)
#: `OAF_back_angry`, or a name with a typo (`OA_bite_neutral`): the word is the second field.
_TESS_WORD = re.compile(r"^[A-Za-z]+_(?P<word>[A-Za-z]+)_", re.IGNORECASE)


def tess_clip(path: Path) -> Clip:
    """`OAF_angry/OAF_back_angry`: speaker (older or younger actress), word, emotion (`ps` = pleasant surprise).

    The folder (`OAF_angry`, `YAF_pleasant_surprised`, any case) names speaker and emotion more
    reliably than the file, whose name has typos in the distributed corpus: it wins where it is readable.
    """
    folder = _TESS_FOLDER.match(path.parent.name)
    match = _TESS.match(path.stem)
    if folder is not None and folder["emotion"].lower() in TESS_EMOTION_CODES:
        word = _TESS_WORD.match(path.stem)
        if word is None:
            raise BadName("name outside the TESS scheme SPEAKER_WORD_EMOTION (its folder is readable, its word not)")
        emotion = _label(TESS_EMOTION_CODES, folder["emotion"].lower(), "TESS")
        return Clip(str(path), folder["speaker"].upper(), emotion, word["word"].lower(), "XX")
    if match is None:
        raise BadName("name outside the TESS scheme SPEAKER_WORD_EMOTION")
    emotion = _label(TESS_EMOTION_CODES, match["emotion"].lower(), "TESS")
    return Clip(str(path), match["speaker"].upper(), emotion, match["word"].lower(), "XX")


_SAVEE = re.compile(r"^(?:(?P<speaker>DC|JE|JK|KL)_)?(?P<emotion>sa|su|[adfhn])(?P<sentence>\d\d)$", re.IGNORECASE)


def savee_clip(path: Path) -> Clip:
    """`DC_a01` (flat) or `DC/a01` (AudioData folders), any case: speaker, emotion, sentence number."""
    match = _SAVEE.match(path.stem)
    if match is None:
        raise BadName("name outside the SAVEE scheme SPEAKER_EMOTIONNN (or SPEAKER/EMOTIONNN)")
    speaker = (match["speaker"] or path.parent.name).upper()
    if speaker not in ("DC", "JE", "JK", "KL"):
        raise BadName(f"unknown SAVEE speaker {speaker!r} (expected DC, JE, JK or KL)")
    code = match["emotion"].lower()
    emotion = _label(SAVEE_EMOTION_CODES, code, "SAVEE")
    return Clip(str(path), speaker, emotion, f"{code}{match['sentence']}", "XX")


_EMODB = re.compile(r"^(?P<speaker>\d\d)(?P<text>[a-z]\d\d)(?P<emotion>[a-z])(?P<version>[a-z])$", re.IGNORECASE)


def emodb_clip(path: Path) -> Clip:
    """`03a01Fa` (any case: the fields have fixed places): speaker, text code, emotion (German initial), version."""
    match = _EMODB.match(path.stem)
    if match is None:
        raise BadName("name outside the EmoDB scheme SPEAKER TEXT EMOTION VERSION (e.g. 03a01Fa)")
    emotion = _label(EMODB_EMOTION_CODES, match["emotion"].upper(), "EmoDB")
    return Clip(str(path), match["speaker"], emotion, match["text"].lower(), "XX")


#: File-name parser of each corpus, by its `data.reader` name.
PARSERS: dict[str, Callable[[Path], Clip]] = {
    "crema_d": crema_d_clip,
    "ravdess": ravdess_clip,
    "tess": tess_clip,
    "savee": savee_clip,
    "emodb": emodb_clip,
}


@dataclass
class Manifest:
    """The clips read from a corpus, and what was left out and why."""

    clips: list[Clip]
    dropped_classes: dict[str, int]
    bad_names: int


def read_corpus(
    root: str | Path,
    reader: str = "crema_d",
    on_bad_name: BadFilePolicy = "skip",
    classes: Sequence[str] = EMOTIONS,
) -> Manifest:
    """Read every audio file under `root` (recursively) with the file-name parser of `reader`.

    Names the parser cannot read (outside the scheme, unknown label codes) are
    skipped with a warning naming each file (`on_bad_name="skip"`) or stop the read naming
    the file (`"error"`). Clips of emotions outside `classes` are dropped and counted.
    """
    if reader not in PARSERS:
        raise DataError(f"unknown corpus reader {reader!r}: choose one of {sorted(PARSERS)}")
    parse = PARSERS[reader]
    root = Path(root).expanduser()
    clips: list[Clip] = []
    bad: list[tuple[Path, BadName]] = []
    dropped: Counter[str] = Counter()
    files = _audio_files(root)
    for path in files:
        try:
            clip = parse(path)
        except BadName as exc:
            if on_bad_name == "error":
                raise DataError(f"{exc}: {path}") from None
            bad.append((path, exc))
            continue
        if clip.emotion in classes:
            clips.append(clip)
        else:
            dropped[clip.emotion] += 1
    if bad and len(bad) == len(files):  # not one name read: the wrong reader, or the wrong folder
        path, exc = bad[0]
        raise DataError(
            f"the {reader} reader could read none of the {len(files)} file names under {root} (e.g. {path.name}: "
            f"{exc}): is data={reader} the corpus in that folder?"
        )
    for path, exc in bad:
        log.warning("skipped %s: %s", path, exc)
    if bad:
        log.warning("skipped %d file(s) whose names the %s reader could not read (each named above)", len(bad), reader)
    if dropped:
        log.info("dropped clips of classes outside data.classes: %s", dict(dropped))
    if not clips:
        raise DataError(f"no clip of the classes {list(classes)} found under {root} (reader {reader})")
    log.info(
        "read %d clips of %d speakers from %s: %s",
        len(clips),
        len({c.speaker for c in clips}),
        root,
        dict(sorted(Counter(c.emotion for c in clips).items())),
    )
    return Manifest(clips=clips, dropped_classes=dict(dropped), bad_names=len(bad))


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


def read_corpora(
    roots: Mapping[str, str | Path], on_bad_name: BadFilePolicy = "skip", classes: Sequence[str] = EMOTIONS
) -> Manifest:
    """Several corpora as one manifest: each read by the reader of its name (`emodb`, `savee`, ...), each clip
    marked with its corpus, and speakers kept apart per corpus (`emodb:03`, `savee:DC`)."""
    clips: list[Clip] = []
    dropped: Counter[str] = Counter()
    bad = 0
    for corpus, root in sorted(roots.items()):
        manifest = read_corpus(root, corpus, on_bad_name, classes)
        clips += [replace(c, corpus=corpus, speaker=f"{corpus}:{c.speaker}") for c in manifest.clips]
        dropped.update(manifest.dropped_classes)
        bad += manifest.bad_names
    return Manifest(clips=clips, dropped_classes=dict(dropped), bad_names=bad)
