"""The figures runs carry: each must show every bar it draws."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from emotion.tracking import layer_weights
from emotion.tracking.cv import FoldResult, plot_folds


def test_the_cross_validation_plot_puts_its_legend_beside_the_bars_hiding_none() -> None:
    results = [
        FoldResult(i, f"run{i}", {"test/uar": uar}, np.zeros(3), np.zeros(3), {"test": [f"s{i}"]})
        for i, uar in enumerate([0.95, 0.9, 0.97, 0.92])  # tall bars, where a legend inside the axes would sit
    ]
    figure = plot_folds(results, {"test/uar_mean": 0.935, "test/uar_pooled": 0.93})
    FigureCanvasAgg(figure).draw()
    (ax,) = figure.axes
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the plotting area


def test_the_layer_weight_plot_draws_one_bar_per_layer_with_the_spread_over_folds() -> None:
    weights = np.array([[0.1, 0.2, 0.7], [0.2, 0.2, 0.6]])
    figure = layer_weights.plot(weights, "over 2 folds")
    (ax,) = figure.axes
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, weights.mean(axis=0))
    (bars,) = [c for c in ax.containers if hasattr(c, "errorbar")]
    assert bars.errorbar is not None  # the ± std error bars
    assert layer_weights.from_metrics(layer_weights.as_metrics([0.5, 0.5]) | {"layer_weight/00_mean": 1}) == [0.5, 0.5]
