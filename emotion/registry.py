"""The closed list of what a saved model may name: its network, its feature set, its encoder class.

A model file (a checkpoint, a skops file) is data someone else may have written. Its recipe names classes by
their dotted path; only the classes registered here are built from it, with parameters checked against their
constructors' type hints (`emotion.serving.recipes`). emotion's own are registered below. An extension
registers its own explicitly (`register_net`, `register_encoder`) in a module that the host names in
`EMOTION_EXTENSIONS` (comma-separated); those modules are imported when a model is read, nothing else is.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from emotion.errors import ConfigError

#: The variable naming the modules (comma-separated) that register a host's own classes.
EXTENSIONS = "EMOTION_EXTENSIONS"

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Entry:
    """A class a saved recipe may build. `fixed`: parameters a file may only give these values (or leave out);
    `nested`: parameters that are themselves the keyword arguments of another registered class."""

    cls: type
    fixed: Mapping[str, Any] = field(default_factory=dict)
    nested: Mapping[str, type] = field(default_factory=dict)


NETS: dict[str, Entry] = {}
FEATURES: dict[str, Entry] = {}
ENCODERS: dict[str, Entry] = {}


def dotted_name(cls: type) -> str:
    """`package.module.Class`: how a recipe names a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_net(cls: T, fixed: Mapping[str, Any] | None = None, nested: Mapping[str, type] | None = None) -> T:
    """Let saved models name the network `cls` (built with the features' shapes and the number of classes)."""
    NETS[dotted_name(cls)] = Entry(cls, dict(fixed or {}), dict(nested or {}))
    return cls


def register_features(cls: T) -> T:
    """Let saved models name the feature set `cls`."""
    FEATURES[dotted_name(cls)] = Entry(cls)
    return cls


def register_encoder(cls: T) -> T:
    """Let saved models name the encoder class `cls` (an `emotion.encoders.Encoder` built without arguments)."""
    ENCODERS[dotted_name(cls)] = Entry(cls)
    return cls


def import_extensions() -> None:
    """Import the modules `EMOTION_EXTENSIONS` names, so that they register their classes."""
    for name in os.environ.get(EXTENSIONS, "").replace(os.pathsep, ",").split(","):
        if name.strip():
            try:
                importlib.import_module(name.strip())
            except ImportError as exc:
                raise ConfigError(f"{EXTENSIONS} names {name.strip()!r}, which cannot be imported: {exc}") from None


def _register_emotions_own() -> None:
    from emotion.data.features import MFCC, EGeMAPS, LogMel, LogMelMFCC, MelMean
    from emotion.data.ssl import SSLLayers
    from emotion.models.cnn1d import CNN1D
    from emotion.models.cnn2d import CNN2D
    from emotion.models.fusion import Fusion
    from emotion.models.linear import SoftmaxRegression
    from emotion.models.ssl_head import WeightedLayers
    from emotion.models.tdnn import CompactTDNN

    for net in (CNN1D, CNN2D, SoftmaxRegression, WeightedLayers, CompactTDNN):
        register_net(net)
    # A saved fusion holds every weight: it never reads its branches from files.
    register_net(Fusion, fixed={"mode": "end_to_end", "branch_checkpoints": None}, nested={"branch": CNN2D})
    for features in (LogMel, MelMean, MFCC, LogMelMFCC, EGeMAPS, SSLLayers):
        register_features(features)


_register_emotions_own()
