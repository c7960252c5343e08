"""A saved model's recipe, read as data: typed, bounded and checked before anything is built.

Training saves with each model the recipe it is rebuilt from (`emotion.pipeline.build.inference_recipe`): the
network and its parameters, the feature set with its spectral settings, window policy and encoder, the front
end's duration limits and the `normalize` stage's settings. A model file is data someone else may have written,
so `parse_recipe` reads it by a schema: plain values only (no `${...}` is ever resolved), each class one of the
closed registry's (`emotion.registry`), each parameter of the type its constructor declares, within bounds. No
Hydra `instantiate` runs on anything read from a file, and a file names no path, URL, store or logger: an
encoder is named (a torchaudio bundle, a hub id, a folder's name, a registered class) and found where the host
keeps encoders (`emotion.serving.encoder_refs`). Anything else is
refused in one line (`UnsafeRecipe`), before anything is built, read or contacted.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, create_model

from emotion.data.audio import MAX_DURATION
from emotion.data.blending import CurveSchema
from emotion.data.features import FeatureSet, Spectral
from emotion.data.windows import Window
from emotion.errors import ConfigError, UnsafeRecipe
from emotion.registry import FEATURES, NETS, Entry, dotted_name, import_extensions
from emotion.serving.encoder_refs import EncoderRef, encoder_ref, short_repr

#: The longest string, and the deepest nesting, a recipe may hold.
MAX_STRING = 256
MAX_DEPTH = 6
#: Constructor parameters that the recipe's other parts give, not the class's own entry.
NET_ARGUMENTS = ("input_shapes", "num_classes")
FEATURE_ARGUMENTS = ("spectral", "window", "encoder", "checkpoint")


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
    learn_blend: bool = False
    blend_curve: CurveSchema | None = None


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
            raise UnsafeRecipe(f"{source}'s recipe holds an interpolation ({short_repr(value)}), never resolved")
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
            f"{source}'s recipe names {short_repr(target)}, which is not a {kind} emotion knows (an extension's own: "
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
        raise UnsafeRecipe(f"{source}'s recipe names {short_repr(target)} for {cls.__name__}: not loaded")
    return data


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg'].lower()}"
