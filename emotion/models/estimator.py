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
from sklearn.base import BaseEstimator, TransformerMixin

from emotion.data.normalize import SpeakerNormalizer, saved_settings
from emotion.data.windows import average_over_windows
from emotion.errors import ConfigError, EmotionError

#: The file suffix of an estimator head (a PyTorch head is a `.ckpt`).
SUFFIX = ".skops"


class UntrustedFile(EmotionError):
    """A skops file holding types that skops does not trust: it is not loaded."""


def check_layers(layers: Any) -> None:
    """ConfigError unless `layers` is `all`, `mean` or a layer index."""
    if layers not in ("all", "mean") and not isinstance(layers, int):
        raise ConfigError(f"model.layers={layers}: choose all, mean or a layer's index (0 is the encoder's input)")


class LayerView(TransformerMixin, BaseEstimator):
    """The first step of a head's pipeline: rows of an encoder's (layers, width) features, flattened, as the head
    reads them: `all` layers concatenated, their `mean`, or the layer of that index. With `num_layers=1` (features
    of any other kind) rows pass as they are. A step of the pipeline, so that the search can choose it."""

    def __init__(self, layers: str | int = "all", num_layers: int = 1) -> None:
        self.layers = layers
        self.num_layers = num_layers

    def fit(self, rows: np.ndarray, labels: Any = None) -> LayerView:
        check_layers(self.layers)
        return self

    def transform(self, rows: np.ndarray) -> np.ndarray:
        if self.layers == "all" or self.num_layers == 1:
            return rows
        stacked = rows.reshape(len(rows), self.num_layers, -1)
        return stacked.mean(axis=1) if self.layers == "mean" else stacked[:, int(self.layers)]


#: The types a head's skops file may hold besides those skops trusts by default: our own layer view, and the
#: private classes scikit-learn's own CalibratedClassifierCV is fitted into (code of scikit-learn, not of the file).
TRUSTED_TYPES = (
    f"{LayerView.__module__}.{LayerView.__qualname__}",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


class EstimatorHead:
    """Class probabilities of model inputs from a fitted scikit-learn classifier (`predict_proba`).

    Each clip's inputs are flattened and concatenated in the order of `input_names` (a `LayerView` in the
    estimator's pipeline picks the layers it reads); windowed clips (`segments` given) get the mean of their
    windows' probabilities, as the networks do. `normalizer`: the `normalize` stage its inputs went through (its
    fallback statistics). `fallback`: of a speaker-adaptive head, its non-adaptive twin (the same grid selected and
    fitted on the features before the stage), which answers for the clips of speakers with too few clips.
    """

    def __init__(
        self,
        estimator: Any,
        classes: Sequence[str],
        input_names: Sequence[str],
        normalizer: SpeakerNormalizer | None = None,
        fallback: Any = None,
    ) -> None:
        self.estimator = estimator
        self.classes = tuple(classes)
        self.input_names = tuple(input_names)
        self.normalizer = normalizer or SpeakerNormalizer({})
        self.fallback = fallback

    def rows(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """One row of numbers per clip (or window): the estimator's input."""
        return torch.cat([inputs[name].flatten(start_dim=1).float() for name in self.input_names], dim=1).numpy()

    def probabilities(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(clips, classes) probabilities, in the order of `classes`."""
        return self._probabilities(self.estimator, inputs)

    def fallback_probabilities(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(clips, classes) probabilities of the non-adaptive twin, from inputs before the `normalize` stage."""
        return self._probabilities(self.fallback, inputs)

    def _probabilities(self, estimator: Any, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        predicted = estimator.predict_proba(self.rows(inputs))
        probabilities = np.zeros((len(predicted), len(self.classes)))
        probabilities[:, np.asarray(estimator.classes_, dtype=int)] = predicted  # classes it never saw: 0
        probabilities = torch.from_numpy(probabilities).float()
        if "segments" not in inputs:
            return probabilities
        segments = inputs["segments"]
        return average_over_windows(probabilities, segments, int(segments.max()) + 1)

    def save(self, path: str | Path, recipe: Mapping[str, Any]) -> None:
        """The estimator (and its twin), its classes, inputs and the recipe, as a skops file."""
        import skops.io

        normalizer = {name: tensor.numpy() for name, tensor in self.normalizer.state_dict().items()}
        state = {
            "estimator": self.estimator,
            "fallback": self.fallback,
            "classes": list(self.classes),
            "input_names": list(self.input_names),
            "normalizer": normalizer,
        }
        skops.io.dump(state | {"recipe": dict(recipe)}, path)


def saved_normalizer(state: Mapping[str, np.ndarray], settings: Mapping[str, Any]) -> SpeakerNormalizer:
    """The `normalize` stage of a skops file: its settings (the recipe's) and its statistics."""
    means = {key: value for key, value in state.items() if key.endswith("_mean")}  # population.NAME_mean
    shapes = {key.split(".", 1)[1].removesuffix("_mean"): value.shape for key, value in means.items()}
    normalizer = SpeakerNormalizer(shapes, **saved_settings(settings))
    normalizer.load_state_dict({key: torch.from_numpy(np.asarray(value)) for key, value in state.items()})
    return normalizer


#: `inner_folds=auto`: leave one speaker out up to this many speakers, else `AUTO_FOLDS` speaker folds.
AUTO_LOSO_SPEAKERS = 12
AUTO_FOLDS = 5


def check_inner_folds(inner_folds: str | int) -> str | int:
    """`inner_folds` as given; ConfigError unless `auto`, `loso` or a number of folds (2 or more)."""
    if inner_folds in ("auto", "loso") or (isinstance(inner_folds, int) and inner_folds >= 2):
        return inner_folds
    raise ConfigError(f"model.inner_folds={inner_folds}: choose auto, loso or a number of speaker folds (2 or more)")


class ScikitLearnHead:
    """The `model` group of a scikit-learn head: what `emotion.pipeline.estimator` fits (`model=logreg`, `svm`,
    `heads`).

    `estimator`: an unfitted scikit-learn classifier with `predict_proba` (an SVM through
    `sklearn.calibration.CalibratedClassifierCV`). `layers`: of an encoder's (layers, width) features, `all`
    concatenated, their `mean`, or one layer's index. `grid`: the candidates, chosen over the training and
    validation speakers only: the estimator's hyperparameters (`{"C": [0.1, 1]}`), and `layers` and `estimator`
    themselves; a list of such grids searches each (a head per grid, say). `inner_folds`: how the candidates are
    scored: `loso` (leave one speaker out), a number of speaker folds, or `auto` (`loso` up to
    `AUTO_LOSO_SPEAKERS` speakers, else `AUTO_FOLDS` folds); `n_jobs`: candidates fitted at once (-1: one per
    core). An estimator without `predict_proba` (an SVC) is calibrated once, after the search, on the same
    speaker folds. The features are standardised with the training clips' statistics first (scikit-learn's
    StandardScaler, in the pipeline the search fits), unless `normalize=none`. `name`: the run's `architecture`
    tag.

    `optimizer`, `scheduler` and `loss` are accepted and unused: those groups compose into every `model`, and a
    scikit-learn estimator has its own solver.
    """

    def __init__(
        self,
        estimator: Any,
        classes: Sequence[str],
        input_shapes: Mapping[str, tuple[int, ...]],
        name: str = "estimator",
        grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]] | None = None,
        layers: str | int = "all",
        inner_folds: str | int = "auto",
        n_jobs: int | None = -1,
        optimizer: Any = None,
        scheduler: Any = None,
        loss: Any = None,
    ) -> None:
        grids = [grid] if isinstance(grid, Mapping) else list(grid or [{}])
        for layers_given in [layers, *(value for g in grids for value in g.get("layers", []))]:
            check_layers(layers_given)
        self.estimator = estimator
        self.classes = tuple(classes)
        self.input_shapes = dict(input_shapes)
        self.name = name
        self.grids = [{key: list(values) for key, values in g.items()} for g in grids]
        self.layers = layers
        self.inner_folds = check_inner_folds(inner_folds)
        self.n_jobs = n_jobs
        self.hparams: dict[str, Any] = {}  # the recipe goes here, as on a LightningModule

    @property
    def num_layers(self) -> int:
        """The layers of the one (layers, width) input, as `LayerView` reads them; else 1."""
        shapes = list(self.input_shapes.values())
        return shapes[0][0] if len(shapes) == 1 and len(shapes[0]) == 2 else 1
