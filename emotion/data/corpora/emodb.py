"""Emo-DB (`wav/03a01Fa.wav`): ten German speakers; boredom (`L`) is an extra class."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from emotion.data.corpora.base import BadName, Clip, CorpusReader

_NAME = re.compile(r"^(?P<speaker>\d\d)(?P<text>[a-z]\d\d)(?P<emotion>[a-z])(?P<version>[a-z])$", re.IGNORECASE)


class EmoDB(CorpusReader):
    """`03a01Fa` (any case: the fields have fixed places): speaker, text code, emotion (German initial), version."""

    name = "emodb"
    title = "EmoDB"
    labels: ClassVar[dict[str, str]] = {
        "W": "angry",
        "E": "disgust",
        "A": "fear",
        "F": "happy",
        "N": "neutral",
        "T": "sad",
        "L": "boredom",
    }

    def clip(self, path: Path) -> Clip:
        match = _NAME.match(path.stem)
        if match is None:
            raise BadName("name outside the EmoDB scheme SPEAKER TEXT EMOTION VERSION (e.g. 03a01Fa)")
        emotion = self.label(match["emotion"].upper())
        return Clip(str(path), match["speaker"], emotion, match["text"].lower(), "XX")
