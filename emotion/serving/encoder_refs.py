"""How a saved model names its pretrained encoder, and where this host finds it.

A model file names no path of the machine that trained it: its recipe names the encoder (a torchaudio bundle,
a Hugging Face hub id, a folder's name, or a registered `Encoder` class: `EncoderRef`), and the host that loads
it says where it keeps encoders: the folder a model carries (`emotion-promote --with-upstream`), the folders
`EMOTION_ENCODER_DIRS` names, the local Hugging Face cache (hub ids), or a folder this process's own training
config named (`recorded_encoder`). Nothing a file names is imported or read from anywhere else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from emotion.errors import ConfigError, UnsafeRecipe
from emotion.registry import ENCODERS

#: The variable naming the folders (separated by os.pathsep) where this host keeps pretrained encoders.
ENCODER_DIRS = "EMOTION_ENCODER_DIRS"
#: A hub id (`org/name`) and a folder's or file's name, as a recipe may give them.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,127}")


@dataclass(frozen=True)
class EncoderRef:
    """A pretrained encoder as a recipe names it: `kind` bundle (torchaudio), hub (a hub id), folder (a folder's
    name, found in the host's encoder folders) or class (a registered `Encoder`); `checkpoint`: a bundle's weights
    file, by name."""

    kind: Literal["bundle", "hub", "folder", "class"]
    name: str
    checkpoint: str | None = None

    def load(self, whisper_input: str, carried: Path | None = None) -> Any:
        """The encoder: from the folder a model carries when given, else from where this host keeps it."""
        from emotion.encoders import saved_encoder_overrides
        from emotion.encoders.huggingface import load_huggingface
        from emotion.encoders.torchaudio_bundle import TorchaudioEncoder

        if carried is not None:
            found = saved_encoder_overrides(carried)
            if found.get("checkpoint"):
                return TorchaudioEncoder(self.name, found["checkpoint"])
            return load_huggingface(str(carried), whisper_input)
        if self.kind == "class":
            return ENCODERS[self.name].cls()
        if self.kind == "bundle":
            checkpoint = host_encoder_path(self.checkpoint) if self.checkpoint else None
            if self.checkpoint and checkpoint is None:
                raise self._not_here(self.checkpoint)
            return TorchaudioEncoder(self.name, str(checkpoint) if checkpoint else None)
        folder = host_encoder_path(self.name)
        if folder is not None:
            return load_huggingface(str(folder), whisper_input)
        if self.kind == "hub":
            return load_huggingface(self.name, whisper_input)  # the local Hugging Face cache only
        raise self._not_here(self.name)

    @staticmethod
    def _not_here(name: str) -> ConfigError:
        return ConfigError(
            f"the model's encoder {name} is in none of the folders this host keeps encoders in ({ENCODER_DIRS}); "
            "add the folder holding it there, or promote the run with emotion-promote --with-upstream so that "
            "the model carries its encoder"
        )


#: The encoder folders and weights files this process's own (trusted) configs named, by name: a run that trains
#: on a folder logs a model that loads from it without further setting.
_NAMED_HERE: dict[str, Path] = {}


def host_encoder_path(name: str) -> Path | None:
    """`name` (a folder's or file's name, or `org/name`) under one of the host's encoder folders, or named by
    this process's own config, if there."""
    for folder in os.environ.get(ENCODER_DIRS, "").split(os.pathsep):
        if not folder:
            continue
        for candidate in (Path(folder) / name, Path(folder) / name.rsplit("/", 1)[-1]):
            if candidate.exists():
                return candidate.resolve()
    return _NAMED_HERE.get(name)


def encoder_ref(value: str, checkpoint: str | None, source: str) -> EncoderRef:
    """How a recipe's `encoder` (and a bundle's `checkpoint`) names the encoder; paths are kept by name only."""
    from emotion.encoders.torchaudio_bundle import is_bundle

    weights = Path(checkpoint).name if checkpoint else None
    if weights is not None and not NAME.fullmatch(weights):
        raise UnsafeRecipe(f"{source}'s recipe names the encoder weights {short_repr(checkpoint)}: not loaded")
    if is_bundle(value):
        return EncoderRef("bundle", value, weights)
    if value in ENCODERS:
        return EncoderRef("class", value)
    if HUB_ID.fullmatch(value) and ".." not in value:
        return EncoderRef("hub", value)
    name = Path(value).name if value.startswith("/") else value  # models saved before recorded a folder's path
    if NAME.fullmatch(name) and name not in ("..", "."):
        return EncoderRef("folder", name)
    raise UnsafeRecipe(f"{source}'s recipe names the encoder {short_repr(value)}, which is not an encoder's name")


def recorded_encoder(encoder: str, checkpoint: str | None) -> tuple[str, str | None]:
    """What a recipe records of the encoder a (trusted) training config names: a folder or weights file by its
    name alone; this process remembers where it is."""
    for given in (encoder, checkpoint):
        path = Path(given).expanduser() if given else None
        if path is not None and path.exists():
            _NAMED_HERE[path.resolve().name] = path.resolve()
    if Path(encoder).expanduser().is_dir():
        encoder = Path(encoder).expanduser().resolve().name
    return encoder, Path(checkpoint).name if checkpoint else None


def short_repr(value: Any) -> str:
    """A value as a one-line error may quote it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"
