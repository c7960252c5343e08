"""Frozen pretrained speech encoders behind one interface (`Encoder`): torchaudio bundles and Hugging Face models.

`load_encoder(name)` picks the implementation from the name: a torchaudio pipeline bundle
(`WAVLM_BASE_PLUS`, `HUBERT_BASE`, ...), the dotted path of an `Encoder` class of your own
(`my_encoders.FrameEnergy`, see docs/extending.md), else a Hugging Face hub id or folder
(`openai/whisper-base`, `microsoft/wavlm-base-plus`, `../models/whisper-base`).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from emotion.encoders.base import Encoder, length_batches, saved_encoder_overrides
from emotion.encoders.huggingface import WhisperInput, load_huggingface
from emotion.encoders.torchaudio_bundle import TorchaudioEncoder, is_bundle
from emotion.errors import ConfigError

__all__ = ["Encoder", "length_batches", "load_encoder", "saved_encoder_overrides"]


def load_encoder(name: str, checkpoint: str | None = None, whisper_input: WhisperInput = "pad30") -> Encoder:
    """The encoder `name` names (its weights are loaded at first use).

    `checkpoint`: a weights file for a torchaudio bundle. `whisper_input`: `cut` or `pad30`, for Whisper.
    """
    if is_bundle(name):
        return TorchaudioEncoder(name, checkpoint)
    own = encoder_class(name)
    if own is not None:
        return own()
    if checkpoint:
        raise ConfigError(
            f"features.checkpoint is for torchaudio bundles; {name} is read with from_pretrained (a hub id or folder)"
        )
    return load_huggingface(name, whisper_input)


#: `package.module.Class`: what names a class, and no hub id (`org/name`) or folder.
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def encoder_class(name: str) -> type[Encoder] | None:
    """The `Encoder` subclass at the dotted path `name`, or None if `name` is not one (a hub id, a folder)."""
    if not _DOTTED.fullmatch(name) or Path(name).exists():
        return None
    module, _, attribute = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute, None)
    except ImportError:
        return None
    if isinstance(found, type) and issubclass(found, Encoder):
        return found
    raise ConfigError(f"features.encoder={name} is not an Encoder (emotion.encoders.Encoder)")
