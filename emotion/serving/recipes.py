"""A saved model's recipe, read as data: typed, bounded and checked before anything is built.

Training saves with each model the recipe it is rebuilt from (`emotion.pipeline.build.inference_recipe`): the
network and its parameters, the feature set with its spectral settings, window policy and encoder, the front
end's duration limits and the `normalize` stage's settings. A model file is data someone else may have written,
so `parse_recipe` reads it by a schema: plain values only (no `${...}` is ever resolved), each class one of the
closed registry's (`emotion.registry`), each parameter of the type its constructor declares, within bounds. No
Hydra `instantiate` runs on anything read from a file, and a file names no path, URL, store or logger: an
encoder is named (a torchaudio bundle, a hub id, a folder's name, a registered class) and found where the host
keeps encoders (`EMOTION_ENCODER_DIRS`, the Hugging Face cache, or the folder a model carries). Anything else is
refused in one line (`UnsafeRecipe`), before anything is built, read or contacted.
"""

from __future__ import annotations

import inspect
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, create_model

from emotion.data.audio import MAX_DURATION
from emotion.data.features import FeatureSet, Spectral
from emotion.data.windows import Window
from emotion.errors import ConfigError, EmotionError
from emotion.registry import ENCODERS, FEATURES, NETS, Entry, dotted_name, import_extensions

#: The variable naming the folders (separated by os.pathsep) where this host keeps pretrained encoders.
ENCODER_DIRS = "EMOTION_ENCODER_DIRS"
#: The longest string, and the deepest nesting, a recipe may hold.
MAX_STRING = 256
MAX_DEPTH = 6
#: A hub id (`org/name`) and a folder's name, as a recipe may give them.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,127}")
#: Constructor parameters that the recipe's other parts give, not the class's own entry.
NET_ARGUMENTS = ("input_shapes", "num_classes")
FEATURE_ARGUMENTS = ("spectral", "window", "encoder", "checkpoint")


class UnsafeRecipe(EmotionError):
    """A saved recipe that is not plain, bounded data of the registered classes: nothing of it is built."""


class SpectralSettings(BaseModel):
    """`Spectral`, bounded: a file cannot ask for a gigabyte STFT."""

    model_config = ConfigDict(extra="forbid", strict=True)
    sample_rate: Annotated[int, Field(ge=4000, le=384_000)] = 16000
    n_fft: Annotated[int, Field(ge=16, le=16384)] = 1024
    hop_length: Annotated[int, Field(ge=1, le=16384)] = 512
    n_mels: Annotated[int, Field(ge=1, le=512)] = 128
    n_frames: Annotated[int, Field(ge=1, le=100_000)] = 62
    f_min: Annotated[float, Field(ge=0)] = 0.0
    f_max: Annotated[float, Field(gt=0)] | None = None
    top_db: Annotated[float, Field(gt=0, le=400)] = 80.0


class WindowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Literal["crop", "utterance"] = "crop"
    hop: Annotated[float, Field(gt=0, le=1)] = 0.5
    trim_db: Annotated[float, Field(gt=0, le=400)] | None = None


class FrontEndSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    min_duration: Annotated[float, Field(ge=0, le=60)] = 0.0
    max_duration: Annotated[float, Field(gt=0, le=MAX_DURATION)] = MAX_DURATION


class NormalizeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Literal["none", "population", "speaker"] = "population"
    scale: Literal["mean_var", "mean"] = "mean_var"
    min_clips: Annotated[int, Field(ge=1, le=10_000)] = 10
    shrinkage: Annotated[float, Field(ge=0, le=10_000)] = 2.0


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
        raise UnsafeRecipe(f"{source}'s recipe names the encoder weights {_short(checkpoint)}: not loaded")
    if is_bundle(value):
        return EncoderRef("bundle", value, weights)
    if value in ENCODERS:
        return EncoderRef("class", value)
    if HUB_ID.fullmatch(value) and ".." not in value:
        return EncoderRef("hub", value)
    name = Path(value).name if value.startswith("/") else value  # models saved before recorded a folder's path
    if NAME.fullmatch(name) and name not in ("..", "."):
        return EncoderRef("folder", name)
    raise UnsafeRecipe(f"{source}'s recipe names the encoder {_short(value)}, which is not an encoder's name")


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


@dataclass(frozen=True)
class NetSpec:
    """A registered network and its checked keyword arguments."""

    target: str
    params: dict[str, Any]

    def build(self, input_shapes: Mapping[str, tuple[int, ...]], num_classes: int) -> Any:
        return NETS[self.target].cls(input_shapes=dict(input_shapes), num_classes=num_classes, **self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"_target_": self.target, "_partial_": True, **self.params}


@dataclass(frozen=True)
class FeatureSpec:
    """A registered feature set: its spectral settings, window policy, encoder and other checked arguments."""

    target: str
    spectral: Spectral
    window: Window
    params: dict[str, Any]
    encoder: EncoderRef | None = None

    def build(self, carried_encoder: Path | None = None) -> FeatureSet:
        """The feature set; an encoder that cannot be loaded here is one line saying how to carry it."""
        arguments = dict(self.params)
        if self.encoder is not None:
            encoder = self.encoder.load(str(self.params.get("whisper_input", "pad30")), carried_encoder)
            arguments["encoder"] = encoder
        return FEATURES[self.target].cls(spectral=self.spectral, window=self.window, **arguments)

    def to_dict(self) -> dict[str, Any]:
        saved: dict[str, Any] = {
            "_target_": self.target,
            "spectral": {"_target_": dotted_name(Spectral), **asdict(self.spectral)},
            "window": {"_target_": dotted_name(Window), **asdict(self.window)},
            **self.params,
        }
        if self.encoder is not None:
            saved |= {"encoder": self.encoder.name, "checkpoint": self.encoder.checkpoint}
        return saved


@dataclass(frozen=True)
class Recipe:
    """What a trained model is rebuilt from: its network (none for a scikit-learn head), feature set, front end
    duration limits (seconds) and `normalize` settings."""

    net: NetSpec | None
    features: FeatureSpec
    front_end: FrontEndSettings
    normalize: NormalizeSettings

    def to_dict(self) -> dict[str, Any]:
        """The recipe as saved in a model file (plain values)."""
        return {
            "net": self.net.to_dict() if self.net else {},
            "features": self.features.to_dict(),
            "front_end": self.front_end.model_dump(),
            "normalize": self.normalize.model_dump(),
        }


def parse_recipe(data: Any, source: str) -> Recipe:
    """The recipe a model file holds, checked; UnsafeRecipe (one line) for anything the schema does not allow."""
    import_extensions()
    check_plain(data, source)
    if not isinstance(data, Mapping) or not {"features", "front_end"} <= set(data):
        raise UnsafeRecipe(f"{source}'s recipe is not a recipe (it needs `features` and `front_end`): not loaded")
    unknown = sorted(set(data) - {"net", "features", "front_end", "normalize"})
    if unknown:
        raise UnsafeRecipe(f"{source}'s recipe has parts emotion does not know ({', '.join(unknown)}): not loaded")
    net = net_spec(data["net"], source) if data.get("net") else None
    features = feature_spec(data["features"], source)
    front_end = settings(FrontEndSettings, data["front_end"], "front_end", source)
    normalize = settings(NormalizeSettings, dict(data.get("normalize") or {}), "normalize", source)
    if front_end.min_duration >= front_end.max_duration:
        raise UnsafeRecipe(f"{source}'s recipe: front_end.min_duration is not below max_duration: not loaded")
    return Recipe(net, features, front_end, normalize)


def check_plain(value: Any, source: str, depth: int = 0) -> None:
    """UnsafeRecipe unless `value` is plain data (str, number, bool, None, lists and string-keyed maps of them),
    shallow, with short strings, none of which holds an interpolation (`${...}` is never resolved)."""
    if depth > MAX_DEPTH:
        raise UnsafeRecipe(f"{source}'s recipe is nested too deeply: not loaded")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise UnsafeRecipe(f"{source}'s recipe holds a string of {len(value)} characters: not loaded")
        if "${" in value:
            raise UnsafeRecipe(f"{source}'s recipe holds an interpolation ({_short(value)}), never resolved")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsafeRecipe(f"{source}'s recipe has a key that is not a string: not loaded")
            check_plain(key, source, depth + 1)
            check_plain(item, source, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            check_plain(item, source, depth + 1)
    elif value is not None and not isinstance(value, bool | int | float):
        raise UnsafeRecipe(f"{source}'s recipe holds a {type(value).__name__}, not plain data: not loaded")


def net_spec(data: Any, source: str) -> NetSpec:
    """The network part: a registered network's dotted name (`_target_`, `_partial_: true`) and its arguments."""
    data = _mapping(data, "net", source)
    entry = _entry(NETS, data.get("_target_"), "network", source)
    if data.get("_partial_") is not True:
        raise UnsafeRecipe(f"{source}'s recipe: net._partial_ must be true: not loaded")
    params = {key: value for key, value in data.items() if key not in ("_target_", "_partial_")}
    return NetSpec(dotted_name(entry.cls), checked_params(entry, params, NET_ARGUMENTS, "net", source))


def feature_spec(data: Any, source: str) -> FeatureSpec:
    """The feature set part: a registered feature set, its `spectral` and `window` settings, its arguments."""
    data = _mapping(data, "features", source)
    entry = _entry(FEATURES, data.get("_target_"), "feature set", source)
    spectral = settings(SpectralSettings, _without_target(data.get("spectral"), Spectral, source), "spectral", source)
    window = settings(WindowSettings, _without_target(data.get("window"), Window, source), "window", source)
    params = {key: value for key, value in data.items() if key not in ("_target_", *FEATURE_ARGUMENTS)}
    accepts_encoder = "encoder" in inspect.signature(entry.cls).parameters
    encoder = None
    if accepts_encoder:
        name, checkpoint = data.get("encoder"), data.get("checkpoint")
        if not isinstance(name, str) or not (checkpoint is None or isinstance(checkpoint, str)):
            raise UnsafeRecipe(f"{source}'s recipe: features.encoder must name an encoder: not loaded")
        encoder = encoder_ref(name, checkpoint, source)
    elif "encoder" in data or "checkpoint" in data:
        raise UnsafeRecipe(f"{source}'s recipe gives an encoder to a feature set that takes none: not loaded")
    return FeatureSpec(
        dotted_name(entry.cls),
        Spectral(**spectral.model_dump()),
        Window(**window.model_dump()),
        checked_params(entry, params, FEATURE_ARGUMENTS, "features", source),
        encoder,
    )


def settings(model: type[BaseModel], data: Any, part: str, source: str) -> Any:
    """`data` read by a settings schema; UnsafeRecipe naming the first field it refuses."""
    try:
        return model.model_validate(_mapping(data, part, source))
    except ValidationError as exc:
        raise UnsafeRecipe(f"{source}'s recipe: {part}.{_first_error(exc)}: not loaded") from None


def checked_params(entry: Entry, params: Mapping[str, Any], given: tuple[str, ...], part: str, source: str) -> dict:
    """A registered class's keyword arguments, each of the type its constructor declares (and an entry's fixed
    values and nested classes respected); UnsafeRecipe naming the first one refused."""
    for name, value in entry.fixed.items():
        if params.get(name, value) != value:
            raise UnsafeRecipe(f"{source}'s recipe: {part}.{name} may only be {value!r} in a saved model: not loaded")
    checked = dict(settings(parameters_model(entry.cls, given), params, part, source).model_dump(exclude_unset=True))
    for name, nested in entry.nested.items():
        if checked.get(name) is not None:
            inner = settings(parameters_model(nested, NET_ARGUMENTS), checked[name], f"{part}.{name}", source)
            checked[name] = inner.model_dump(exclude_unset=True)
    return checked


def parameters_model(cls: type, given: tuple[str, ...]) -> type[BaseModel]:
    """A strict schema of `cls`'s keyword arguments from its constructor's type hints (the parts in `given`
    left out): no other argument, no value of another type."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # hints that do not resolve: the class cannot be checked, so it is not built
        raise ConfigError(f"{dotted_name(cls)}'s constructor has type hints that cannot be read") from None
    fields_ = {}
    for name, parameter in inspect.signature(cls).parameters.items():
        if name in given or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields_[name] = (_lists_as_tuples(hints.get(name, Any)), default)
    config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    return create_model(f"{cls.__name__}Arguments", __config__=config, **fields_)


def _lists_as_tuples(hint: Any) -> Any:
    """A homogeneous tuple's hint that also takes a list (as a file holds it), its items still strict."""
    arguments = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
        return Annotated[tuple[Annotated[arguments[0], Strict()], ...], Strict(False)]
    return hint


def _entry(registry: Mapping[str, Entry], target: Any, kind: str, source: str) -> Entry:
    if not isinstance(target, str) or target not in registry:
        raise UnsafeRecipe(
            f"{source}'s recipe names {_short(target)}, which is not a {kind} emotion knows (an extension's own: "
            "register it, docs/extending.md): not loaded"
        )
    return registry[target]


def _mapping(data: Any, part: str, source: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise UnsafeRecipe(f"{source}'s recipe: {part} is not a table of settings: not loaded")
    return dict(data)


def _without_target(data: Any, cls: type, source: str) -> dict[str, Any]:
    """A settings table, whose `_target_` (if any) may only name the class it always names."""
    data = _mapping(data if data is not None else {}, cls.__name__.lower(), source)
    target = data.pop("_target_", dotted_name(cls))
    if target != dotted_name(cls):
        raise UnsafeRecipe(f"{source}'s recipe names {_short(target)} for {cls.__name__}: not loaded")
    return data


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg'].lower()}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"
