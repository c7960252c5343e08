"""SAVEE (`AudioData/DC/a01.wav` or `DC_a01.wav`): four male speakers; surprise (`su`) is an extra class."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from emotion.data.corpora.base import BadName, Clip, CorpusReader

SPEAKERS = ("DC", "JE", "JK", "KL")
_NAME = re.compile(r"^(?:(?P<speaker>DC|JE|JK|KL)_)?(?P<emotion>sa|su|[adfhn])(?P<sentence>\d\d)$", re.IGNORECASE)


class Savee(CorpusReader):
    """`DC_a01` (flat) or `DC/a01` (AudioData folders), any case: speaker, emotion, sentence number."""

    name = "savee"
    title = "SAVEE"
    labels: ClassVar[dict[str, str]] = {
        "a": "angry",
        "d": "disgust",
        "f": "fear",
        "h": "happy",
        "n": "neutral",
        "sa": "sad",
        "su": "surprise",
    }

    def clip(self, path: Path) -> Clip:
        match = _NAME.match(path.stem)
        if match is None:
            raise BadName("name outside the SAVEE scheme SPEAKER_EMOTIONNN (or SPEAKER/EMOTIONNN)")
        speaker = (match["speaker"] or path.parent.name).upper()
        if speaker not in SPEAKERS:
            raise BadName(f"unknown SAVEE speaker {speaker!r} (expected DC, JE, JK or KL)")
        code = match["emotion"].lower()
        return Clip(str(path), speaker, self.label(code), f"{code}{match['sentence']}", "XX")
