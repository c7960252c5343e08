"""TESS (`OAF_angry/OAF_back_angry.wav`): two actresses; pleasant surprise (`ps`) is the extra class surprise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from emotion.data.corpora.base import BadName, Clip, CorpusReader

_NAME = re.compile(r"^(?P<speaker>[OY]AF)_(?P<word>[A-Za-z]+)_(?P<emotion>[A-Za-z_]+)$", re.IGNORECASE)
_FOLDER = re.compile(r"^(?P<speaker>[OY]AF)_(?P<emotion>[A-Za-z_]+)$", re.IGNORECASE)
#: `OAF_back_angry`, or a name with a typo (`OA_bite_neutral`): the word is the second field.
_WORD = re.compile(r"^[A-Za-z]+_(?P<word>[A-Za-z]+)_", re.IGNORECASE)


class Tess(CorpusReader):
    """`OAF_angry/OAF_back_angry`: speaker (older or younger actress), word, emotion (`ps` = pleasant surprise).

    The folder (`OAF_angry`, `YAF_pleasant_surprised`, any case) names speaker and emotion more
    reliably than the file, whose name has typos in the distributed corpus: it wins where it is readable.
    """

    name = "tess"
    title = "TESS"
    labels: ClassVar[dict[str, str]] = {
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

    def clip(self, path: Path) -> Clip:
        folder = _FOLDER.match(path.parent.name)
        if folder is not None and folder["emotion"].lower() in self.labels:
            word = _WORD.match(path.stem)
            if word is None:
                raise BadName(
                    "name outside the TESS scheme SPEAKER_WORD_EMOTION (its folder is readable, its word not)"
                )
            emotion = self.label(folder["emotion"].lower())
            return Clip(str(path), folder["speaker"].upper(), emotion, word["word"].lower(), "XX")
        match = _NAME.match(path.stem)
        if match is None:
            raise BadName("name outside the TESS scheme SPEAKER_WORD_EMOTION")
        emotion = self.label(match["emotion"].lower())
        return Clip(str(path), match["speaker"].upper(), emotion, match["word"].lower(), "XX")
