"""Corpus readers: one module per corpus behind one interface (`base.CorpusReader`), chosen by `data.reader`.

| reader   | file name                  | speaker          | labels beyond the six classes |
|----------|----------------------------|------------------|-------------------------------|
| crema_d  | `1001_DFA_ANG_XX.wav`      | 1001 (91 actors) |                               |
| ravdess  | `03-01-05-01-02-01-12.wav` | actor 12 (24)    | calm, surprise                |
| tess     | `OAF_back_angry.wav`       | OAF, YAF (2)     | surprise (`ps`)               |
| savee    | `DC_a01.wav`, `DC/a01.wav` | DC, JE, JK, KL   | surprise (`su`)               |
| emodb    | `03a01Fa.wav`              | 03 (10 speakers) | boredom (`L`)                 |
| manifest | a CSV or JSON file: path, label, speaker (any corpus: IEMOCAP, MSP-Podcast, your own)     |

Real distributions are irregular: names are read without regard to case (`dc_SA01.WAV`), and where a corpus
unpacks into folders that name speaker and emotion (TESS's `OAF_angry/`, SAVEE's `AudioData/DC/`), the folder
is read too, so a file whose own name has a typo keeps its labels. Only a file that neither its name nor its
folder can label is skipped, and the log names it. `data.reader` also takes the dotted path of a reader class
of your own (`my_package.corpora.MyCorpus`, see docs/extending.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.utils import get_class

from emotion.data.corpora.base import (
    AUDIO_SUFFIXES,
    EMOTIONS,
    EXTRA_EMOTIONS,
    BadFilePolicy,
    BadName,
    Clip,
    CorpusReader,
    Manifest,
)
from emotion.data.corpora.crema_d import CremaD
from emotion.data.corpora.emodb import EmoDB
from emotion.data.corpora.manifest import ManifestReader
from emotion.data.corpora.ravdess import Ravdess
from emotion.data.corpora.savee import Savee
from emotion.data.corpora.tess import Tess
from emotion.errors import DataError

__all__ = [
    "AUDIO_SUFFIXES",
    "EMOTIONS",
    "EXTRA_EMOTIONS",
    "READERS",
    "BadFilePolicy",
    "BadName",
    "Clip",
    "CorpusReader",
    "Manifest",
    "make_reader",
    "read_corpora",
    "read_corpus",
]

#: The reader of each `data.reader` name.
READERS: dict[str, type[CorpusReader]] = {r.name: r for r in (CremaD, Ravdess, Tess, Savee, EmoDB, ManifestReader)}


def make_reader(reader: str, options: Mapping[str, Any] | None = None) -> CorpusReader:
    """The reader named `reader` (or the class at that dotted path), built with `options`."""
    if reader in READERS:
        return READERS[reader](**(options or {}))
    if "." in reader:
        try:
            cls = get_class(reader)
        except Exception:  # Hydra's lookup raises ImportError or ValueError, wrapped differently by version
            raise DataError(f"cannot import the corpus reader class {reader!r}") from None
        if isinstance(cls, type) and issubclass(cls, CorpusReader):
            return cls(**(options or {}))
        raise DataError(f"{reader} is not a CorpusReader (emotion.data.corpora.base.CorpusReader)")
    choices = f"{sorted(READERS)} or a CorpusReader's dotted path"
    raise DataError(f"unknown corpus reader {reader!r}: choose one of {choices}")


def read_corpus(
    root: str | Path,
    reader: str = "crema_d",
    on_bad_name: BadFilePolicy = "skip",
    classes: Sequence[str] = EMOTIONS,
    options: Mapping[str, Any] | None = None,
) -> Manifest:
    """The clips under `root` (a folder, or the manifest file of `reader=manifest`) of the classes `classes`."""
    return make_reader(reader, options).read(root, on_bad_name, classes)


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
