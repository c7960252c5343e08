"""A scikit-learn estimator as a trained model's head (logistic regression, an SVM, ... on features).

`ScikitLearnHead` is the `model` group of these heads (`model=logreg`, `model=svm`): the estimator, the grid of
its hyperparameters and which encoder layers it reads. `emotion.pipeline.estimator` fits it, choosing the
hyperparameters by leave-one-speaker-out over the run's training and validation speakers only, and keeps the
fitted `EstimatorHead`. Its file is written and read with skops, never with plain pickle: loading refuses any
type that skops does not trust by default (`skops.io.get_untrusted_types`), so a file cannot run code of its
author's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotion.data.normalize import SpeakerNormalizer
from emotion.data.windows import average_over_windows
from emotion.errors import ConfigError, EmotionError

#: The file suffix of an estimator head (a PyTorch head is a `.ckpt`).
SUFFIX = ".skops"


class UntrustedFile(EmotionError):
    """A skops file holding types that skops does not trust: it is not loaded."""


def layer_view(x: torch.Tensor, layers: str | int) -> torch.Tensor:
    """An input shaped (clips, layers, width) as one row per clip: `all` layers concatenated, their `mean`, or the
    layer of that index. Inputs of other shapes are flattened whole (`all`)."""
    if layers == "all" or x.dim() != 3:
        return x.flatten(start_dim=1)
    if layers == "mean":
        return x.mean(dim=1)
    return x[:, int(layers)]


def check_layers(layers: str | int) -> None:
    """ConfigError unless `layers` is `all`, `mean` or a layer index."""
    if layers not in ("all", "mean") and not isinstance(layers, int):
        raise ConfigError(f"model.layers={layers}: choose all, mean or a layer's index (0 is the encoder's input)")


class EstimatorHead:
    """Class probabilities of model inputs from a fitted scikit-learn classifier (`predict_proba`).

    Each clip's inputs are taken as rows (`layer_view`: all layers, their mean or one) and concatenated in the
    order of `input_names`; windowed clips (`segments` given) get the mean of their windows' probabilities, as the
    networks do. `normalizer`: the `normalize` stage its inputs went through (its fallback statistics).
    """

    def __init__(
        self,
        estimator: Any,
        classes: Sequence[str],
        input_names: Sequence[str],
        normalizer: SpeakerNormalizer | None = None,
        layers: str | int = "all",
    ) -> None:
        check_layers(layers)
        self.estimator = estimator
        self.classes = tuple(classes)
        self.input_names = tuple(input_names)
        self.normalizer = normalizer or SpeakerNormalizer({})
        self.layers = layers

    def rows(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """One row of numbers per clip (or window): the estimator's input."""
        views = [layer_view(inputs[name].float(), self.layers) for name in self.input_names]
        return torch.cat(views, dim=1).numpy()

    def probabilities(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(clips, classes) probabilities, in the order of `classes`."""
        predicted = self.estimator.predict_proba(self.rows(inputs))
        probabilities = np.zeros((len(predicted), len(self.classes)))
        probabilities[:, np.asarray(self.estimator.classes_, dtype=int)] = predicted  # classes it never saw: 0
        probabilities = torch.from_numpy(probabilities).float()
        if "segments" not in inputs:
            return probabilities
        segments = inputs["segments"]
        return average_over_windows(probabilities, segments, int(segments.max()) + 1)

    def save(self, path: str | Path, recipe: Mapping[str, Any]) -> None:
        """The estimator, its classes, inputs and the recipe, as a skops file."""
        import skops.io

        normalizer = {name: tensor.numpy() for name, tensor in self.normalizer.state_dict().items()}
        state = {
            "estimator": self.estimator,
            "classes": list(self.classes),
            "input_names": list(self.input_names),
            "layers": self.layers,
            "normalizer": normalizer,
        }
        skops.io.dump(state | {"recipe": dict(recipe)}, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[EstimatorHead, dict[str, Any]]:
        """The head a skops file holds, and its recipe; UntrustedFile if it holds a type skops does not trust."""
        import skops.io

        untrusted = skops.io.get_untrusted_types(file=path)
        if untrusted:
            raise UntrustedFile(
                f"{Path(path).name} holds types skops does not trust ({', '.join(untrusted)}): not loaded"
            )
        state = skops.io.load(path, trusted=[])
        recipe = state["recipe"]
        normalizer = saved_normalizer(state.get("normalizer", {}), recipe.get("normalize") or {})
        head = cls(state["estimator"], state["classes"], state["input_names"], normalizer, state.get("layers", "all"))
        return head, recipe


def saved_normalizer(state: Mapping[str, np.ndarray], settings: Mapping[str, Any]) -> SpeakerNormalizer:
    """The `normalize` stage of a skops file: its settings (the recipe's) and its statistics."""
    means = {key: value for key, value in state.items() if key.endswith("_mean")}  # population.NAME_mean
    shapes = {key.split(".", 1)[1].removesuffix("_mean"): value.shape for key, value in means.items()}
    normalizer = SpeakerNormalizer(shapes, **settings)
    normalizer.load_state_dict({key: torch.from_numpy(np.asarray(value)) for key, value in state.items()})
    return normalizer


class ScikitLearnHead:
    """The `model` group of a scikit-learn head: what `emotion.pipeline.estimator` fits (`model=logreg`, `svm`).

    `estimator`: an unfitted scikit-learn classifier with `predict_proba` (an SVM through
    `sklearn.calibration.CalibratedClassifierCV`). `grid`: its hyperparameters' candidates (`{"C": [0.1, 1]}`),
    chosen by leave-one-speaker-out over the training and validation speakers. `layers`: of an encoder's
    (layers, width) features, `all` concatenated, their `mean`, or one layer's index. The features are
    standardised with the training clips' statistics first (scikit-learn's StandardScaler, in the pipeline the
    search fits), unless `normalize=none`. `name`: the run's `architecture` tag.

    `optimizer`, `scheduler` and `loss` are accepted and unused: those groups compose into every `model`, and a
    scikit-learn estimator has its own solver.
    """

    def __init__(
        self,
        estimator: Any,
        classes: Sequence[str],
        input_shapes: Mapping[str, tuple[int, ...]],
        name: str = "estimator",
        grid: Mapping[str, Sequence[Any]] | None = None,
        layers: str | int = "all",
        optimizer: Any = None,
        scheduler: Any = None,
        loss: Any = None,
    ) -> None:
        check_layers(layers)
        self.estimator = estimator
        self.classes = tuple(classes)
        self.input_shapes = dict(input_shapes)
        self.name = name
        self.grid = {key: list(values) for key, values in (grid or {}).items()}
        self.layers = layers
        self.hparams: dict[str, Any] = {}  # the recipe goes here, as on a LightningModule
