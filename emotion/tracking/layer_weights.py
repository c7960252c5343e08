"""The layer weights of a model over a frozen encoder (model=ssl_head): metrics and a bar plot per run or per CV."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from mlflow import MlflowClient

from emotion.tracking.reports import TIGHT

#: The metric prefix of each layer's weight (`layer_weight/00`, ...) and the plot's artifact.
PREFIX = "layer_weight/"
ARTIFACT = "layer_weights.png"


def as_metrics(weights: Sequence[float]) -> dict[str, float]:
    """`layer_weight/NN` for each layer's weight."""
    return {f"{PREFIX}{i:02d}": float(w) for i, w in enumerate(weights)}


def from_metrics(metrics: Mapping[str, float]) -> list[float]:
    """The layer weights a run's metrics hold, in layer order (empty for a model without them)."""
    names = sorted(name for name in metrics if name.startswith(PREFIX) and name[len(PREFIX) :].isdigit())
    return [metrics[name] for name in names]


def plot(weights: np.ndarray, title: str) -> Figure:
    """Bars of each layer's weight; for several runs (rows), their mean with ± one std."""
    weights = np.atleast_2d(weights)
    figure = Figure(figsize=(max(4.5, 0.5 * weights.shape[1] + 2), 3.2), constrained_layout=True)
    ax = figure.subplots()
    layers = np.arange(weights.shape[1])
    spread = weights.std(axis=0) if len(weights) > 1 else None
    ax.bar(layers, weights.mean(axis=0), yerr=spread, capsize=3, color="tab:blue")
    ax.axhline(1 / weights.shape[1], color="gray", linestyle=":", label="uniform")
    ax.set(xticks=layers, xlabel="layer (0: the encoder's input embeddings)", ylabel="weight", title=title)
    ax.legend(loc="upper left")
    return figure


def log(client: MlflowClient, run_id: str, weights: np.ndarray, title: str) -> None:
    """The plot as the run's `layer_weights.png`."""
    client.log_figure(run_id, plot(weights, title), ARTIFACT, save_kwargs=TIGHT)
