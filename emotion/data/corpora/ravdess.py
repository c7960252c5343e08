"""RAVDESS, audio-only speech (`Actor_01/03-01-05-01-02-01-01.wav`): 24 actors; calm and surprise are extra classes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from emotion.data.corpora.base import BadName, Clip, CorpusReader

_NAME = re.compile(
    r"^(?P<modality>\d\d)-(?P<channel>\d\d)-(?P<emotion>\d\d)-(?P<intensity>\d\d)-"
    r"(?P<statement>\d\d)-(?P<repetition>\d\d)-(?P<actor>\d\d)$"
)


class Ravdess(CorpusReader):
    """`03-01-05-01-02-01-12`: modality, channel (01 speech, 02 song), emotion, intensity, statement, take, actor."""

    name = "ravdess"
    title = "RAVDESS"
    labels: ClassVar[dict[str, str]] = {
        "01": "neutral",
        "02": "calm",
        "03": "happy",
        "04": "sad",
        "05": "angry",
        "06": "fear",
        "07": "disgust",
        "08": "surprise",
    }

    def clip(self, path: Path) -> Clip:
        match = _NAME.match(path.stem)
        if match is None:
            raise BadName("name outside the RAVDESS scheme MM-VC-EM-IN-ST-RE-AC")
        emotion = self.label(match["emotion"])
        intensity = {"01": "normal", "02": "strong"}.get(match["intensity"], match["intensity"])
        return Clip(str(path), f"actor{match['actor']}", emotion, f"statement{match['statement']}", intensity)
