"""A trained model's file, read: the one place a checkpoint or a skops file becomes a head, a recipe and an identity.

    file -> safe load (torch.load with weights_only, or skops with the types it trusts)
         -> every part checked by a schema (classes, input shapes, the recipe: `emotion.serving.recipes`)
         -> the head built (a network on the meta device, then given the file's own tensors: a file cannot ask
            for more memory than it holds; or the scikit-learn estimator skops restored)
         -> its identity: a digest of what the model is (its parameters and recipe), the same however often it
            is saved (the key of its speaker profiles)

Anything a file holds that the schema does not allow is refused in one line, before anything is built.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotion.errors import EmotionError, UnsafeRecipe
from emotion.models.estimator import SUFFIX, TRUSTED_TYPES, EstimatorHead, UntrustedFile, saved_normalizer
from emotion.models.module import EmotionClassifier
from emotion.models.weights import NETWORK_PREFIX
from emotion.serving.recipes import Recipe, parse_recipe

#: The parts of an EmotionClassifier's state that inference needs (not the loss weights or optimiser).
INFERENCE_PREFIXES = (NETWORK_PREFIX, "standardizer.", "normalizer.")
#: A class's or an input's name, as a model file may give it.
NAME = re.compile(r"[A-Za-z_][\w-]{0,31}")
MAX_CLASSES = 64
MAX_INPUTS = 8
MAX_SIZE = 1_000_000


class StaleCheckpoint(EmotionError):
    """A checkpoint saved before checkpoints carried their recipe: it cannot be restored alone."""


@dataclass
class SavedModel:
    """What a model file holds, checked and built: the head (an `EmotionClassifier` or an `EstimatorHead`), its
    recipe, and its identity (a digest of its parameters and recipe)."""

    head: Any
    recipe: Recipe
    identity: str


def read_model_file(path: str | Path) -> SavedModel:
    """The model a training checkpoint (`.ckpt`) or an estimator's skops file (`.skops`) holds."""
    path = Path(path)
    return read_estimator(path) if path.suffix == SUFFIX else read_network(path)


def inference_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of an EmotionClassifier's state that inference needs: the network's and the standardiser's."""
    return {k: v for k, v in state.items() if k.startswith(INFERENCE_PREFIXES)}


def read_network(path: Path) -> SavedModel:
    """A Lightning checkpoint's network with its standardisation, loaded with `weights_only=True`."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch refuses what is not plain tensors and containers, or not a checkpoint
        raise UnsafeRecipe(f"{path.name} is not a checkpoint emotion can read safely ({type(exc).__name__})") from None
    hyperparameters = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    if not isinstance(hyperparameters, Mapping) or not hyperparameters.get("recipe"):
        raise StaleCheckpoint(
            f"{path.name} was saved before checkpoints carried their recipe, so it cannot be restored "
            "alone: train the run again (its `overrides` tag holds the emotion-train arguments) and promote that"
        )
    recipe = parse_recipe(hyperparameters["recipe"], path.name)
    if recipe.net is None:
        raise UnsafeRecipe(f"{path.name}'s recipe names no network: not loaded")
    classes = checked_classes(hyperparameters.get("classes"), path.name)
    shapes = checked_shapes(hyperparameters.get("input_shapes"), path.name)
    state = checked_tensors(checkpoint.get("state_dict"), path.name)
    try:
        with torch.device("meta"):  # nothing allocated: the file's own tensors are assigned below
            module = EmotionClassifier(partial(recipe.net.build), classes, shapes, recipe=recipe.to_dict())
        module.load_state_dict(state, assign=True)  # strict: every tensor of the network and the standardiser
    except (RuntimeError, TypeError, ValueError, EmotionError):
        raise UnsafeRecipe(f"{path.name}'s weights do not fit its recipe (missing, extra or other shapes)") from None
    if any(tensor.is_meta for tensor in (*module.parameters(), *module.buffers())):
        raise UnsafeRecipe(f"{path.name} lacks some of its network's tensors: not loaded")
    identity = digest(recipe.to_dict(), list(classes), {k: list(v) for k, v in shapes.items()}, state)
    return SavedModel(module.eval(), recipe, identity)


def read_estimator(path: Path) -> SavedModel:
    """An estimator's skops file: refused (UntrustedFile) if it holds a type that skops does not trust."""
    import skops.io

    try:
        untrusted = [name for name in skops.io.get_untrusted_types(file=path) if name not in TRUSTED_TYPES]
    except Exception as exc:
        raise UnsafeRecipe(f"{path.name} is not a skops file emotion can read ({type(exc).__name__})") from None
    if untrusted:
        raise UntrustedFile(f"{path.name} holds types skops does not trust ({', '.join(untrusted)}): not loaded")
    state = skops.io.load(path, trusted=list(TRUSTED_TYPES))
    if not isinstance(state, Mapping) or "recipe" not in state:
        raise UnsafeRecipe(f"{path.name} is not an estimator head saved by emotion: not loaded")
    recipe = parse_recipe(state["recipe"], path.name)
    if recipe.net is not None:
        raise UnsafeRecipe(f"{path.name}'s recipe names a network, which an estimator head has none of: not loaded")
    classes = checked_classes(state.get("classes"), path.name)
    input_names = checked_names(state.get("input_names"), path.name)
    arrays = state.get("normalizer") or {}
    if not isinstance(arrays, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype.kind == "f" for k, v in arrays.items()
    ):
        raise UnsafeRecipe(f"{path.name}'s normalizer is not a table of number arrays: not loaded")
    estimator, fallback = state.get("estimator"), state.get("fallback")
    for fitted in (estimator, fallback):
        if fitted is not None and not (hasattr(fitted, "predict_proba") and hasattr(fitted, "classes_")):
            raise UnsafeRecipe(f"{path.name} holds no fitted classifier: not loaded")
    if estimator is None:
        raise UnsafeRecipe(f"{path.name} holds no fitted classifier: not loaded")
    normalizer = saved_normalizer(arrays, recipe.normalize.model_dump())
    head = EstimatorHead(estimator, classes, input_names, normalizer, fallback)
    identity = digest(recipe.to_dict(), list(classes), list(input_names), dict(arrays), estimator, fallback)
    return SavedModel(head, recipe, identity)


def checked_classes(value: Any, source: str) -> tuple[str, ...]:
    """A model's classes: 2 to 64 distinct short names."""
    names = checked_names(value, source)
    if not 2 <= len(names) <= MAX_CLASSES or len(set(names)) != len(names):
        raise UnsafeRecipe(f"{source} names {len(names)} classes (or some twice): not loaded")
    return names


def checked_names(value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(n, str) and NAME.fullmatch(n) for n in value):
        raise UnsafeRecipe(f"{source}'s class or input names are not short names: not loaded")
    return tuple(value)


def checked_shapes(value: Any, source: str) -> dict[str, tuple[int, ...]]:
    """A network's input shapes: up to 8 named inputs of 1 to 4 positive sizes each."""
    if not isinstance(value, Mapping) or not 1 <= len(value) <= MAX_INPUTS:
        raise UnsafeRecipe(f"{source}'s input shapes are not a table of named shapes: not loaded")
    checked_names(list(value), source)
    shapes = {}
    for name, shape in value.items():
        if (
            not isinstance(shape, list | tuple)
            or not 1 <= len(shape) <= 4
            or not all(isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_SIZE for size in shape)
        ):
            raise UnsafeRecipe(f"{source}'s input shape of {name} is not 1 to 4 sizes: not loaded")
        shapes[name] = tuple(shape)
    return shapes


def checked_tensors(value: Any, source: str) -> dict[str, torch.Tensor]:
    """The checkpoint's state: named tensors; those inference needs."""
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    ):
        raise UnsafeRecipe(f"{source}'s state is not a table of named tensors: not loaded")
    return inference_state(value)


def digest(*parts: Any) -> str:
    """A digest of plain values, tensors, arrays and fitted estimators (their attributes), independent of how
    they were saved: the identity of a model."""
    hasher = hashlib.sha256()
    for part in parts:
        _feed(hasher, part, 0)
    return hasher.hexdigest()[:32]


def _feed(hasher: Any, value: Any, depth: int) -> None:
    if depth > 32:
        raise UnsafeRecipe("a model nested too deeply to identify: not loaded")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.dtype != object:
        hasher.update(f"array {value.dtype} {value.shape}".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, np.ndarray):
        _feed(hasher, value.tolist(), depth + 1)
    elif isinstance(value, str | int | float | bool | np.generic) or value is None:
        hasher.update(f"{type(value).__name__} {value!r};".encode())
    elif isinstance(value, list | tuple):
        hasher.update(f"list {len(value)};".encode())
        for item in value:
            _feed(hasher, item, depth + 1)
    elif isinstance(value, Mapping):
        hasher.update(f"map {len(value)};".encode())
        for key in sorted(value, key=str):
            _feed(hasher, str(key), depth + 1)
            _feed(hasher, value[key], depth + 1)
    elif hasattr(value, "__dict__"):
        hasher.update(f"object {type(value).__module__}.{type(value).__qualname__};".encode())
        _feed(hasher, {key: item for key, item in vars(value).items() if not key.startswith("__")}, depth + 1)
    else:
        hasher.update(f"object {type(value).__module__}.{type(value).__qualname__};".encode())
