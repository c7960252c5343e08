"""A scikit-learn estimator as a trained model's head (logistic regression, an SVM, ... on features).

Its file is written and read with skops, never with plain pickle: loading refuses any type that skops
does not trust by default (`skops.io.get_untrusted_types`), so a file cannot run code of its author's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotion.data.windows import average_over_windows
from emotion.errors import EmotionError

#: The file suffix of an estimator head (a PyTorch head is a `.ckpt`).
SUFFIX = ".skops"


class UntrustedFile(EmotionError):
    """A skops file holding types that skops does not trust: it is not loaded."""


class EstimatorHead:
    """Class probabilities of model inputs from a fitted scikit-learn classifier (`predict_proba`).

    Each clip's inputs are flattened and concatenated in the order of `input_names`; windowed clips
    (`segments` given) get the mean of their windows' probabilities, as the networks do.
    """

    def __init__(self, estimator: Any, classes: Sequence[str], input_names: Sequence[str]) -> None:
        self.estimator = estimator
        self.classes = tuple(classes)
        self.input_names = tuple(input_names)

    def rows(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """One row of numbers per clip (or window): the estimator's input."""
        return torch.cat([inputs[name].flatten(start_dim=1).float() for name in self.input_names], dim=1).numpy()

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

        state = {"estimator": self.estimator, "classes": list(self.classes), "input_names": list(self.input_names)}
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
        return cls(state["estimator"], state["classes"], state["input_names"]), state["recipe"]
