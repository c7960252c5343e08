"""CREMA-D (`AudioWAV/1001_DFA_ANG_XX.wav`): 91 actors, six emotions. The embedded synthetic corpus uses its names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from emotion.data.corpora.base import BadName, Clip, CorpusReader

#: CREMA-D's twelve sentence codes.
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
#: CREMA-D intensity codes: low, medium, high, unspecified.
LEVELS: tuple[str, ...] = ("LO", "MD", "HI", "XX")

_NAME = re.compile(r"^(?P<speaker>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")


class CremaD(CorpusReader):
    """`1001_DFA_ANG_XX`: speaker, sentence, emotion, intensity."""

    name = "crema_d"
    title = "CREMA-D"
    labels: ClassVar[dict[str, str]] = {
        "ANG": "angry",
        "DIS": "disgust",
        "FEA": "fear",
        "HAP": "happy",
        "NEU": "neutral",
        "SAD": "sad",
    }

    def clip(self, path: Path) -> Clip:
        match = _NAME.match(path.stem)
        if match is None:
            raise BadName("name outside the CREMA-D scheme SPEAKER_SENTENCE_EMOTION_LEVEL")
        if match["level"] not in LEVELS:
            raise BadName(f"unknown CREMA-D intensity code {match['level']!r}")
        return Clip(str(path), match["speaker"], self.label(match["emotion"]), match["sentence"], match["level"])
