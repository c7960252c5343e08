"""One run of a scikit-learn head (`model=logreg`, `svm`, `heads`) on cached features: select, fit, test, log.

The hyperparameters of `model.grid` are chosen by leave-one-speaker-out over the run's training and validation
speakers together (each held-out speaker normalised as the `normalize` stage says, like any other): the test
speakers choose nothing, and their clips are not read before the chosen model predicts them. The chosen model
is then fitted on those speakers' clips. `val/<metric>` is the chosen candidate's mean over the held-out
speakers, the run's monitor and a sweep's objective. The run logs what a network's run logs (params, split,
test scores, confusion matrix) and keeps the fitted head as a skops file (`model.skops`), its checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from emotion.data.datamodule import EmotionDataModule
from emotion.errors import ConfigError
from emotion.metrics import METRICS, scores
from emotion.models.estimator import EstimatorHead, LayerView, ScikitLearnHead
from emotion.tracking import reports
from emotion.tracking.names import best_metric

#: The estimator's step in the pipeline the search fits (grid keys are prefixed with it).
STEP = "estimator"


def selection_metric(monitor: str) -> Any:
    """The `emotion.metrics` score `monitor` names (`val/uar`), as a scikit-learn scorer."""
    for metric in METRICS:
        if monitor == f"val/{metric.key}":
            return make_scorer(metric.score)
    keys = [f"val/{m.key}" for m in METRICS]
    raise ConfigError(f"monitor={monitor}: a scikit-learn head selects by one of {keys}")


def search(spec: ScikitLearnHead, standardize: bool, monitor: str) -> GridSearchCV:
    """The search: the layer view, the standardiser (unless `normalize=none`) and the estimator, every candidate of
    the grids scored by leave-one-speaker-out, the best refitted on every speaker given."""
    steps = [("layers", LayerView(spec.layers, spec.num_layers))]
    steps += [("scale", StandardScaler())] if standardize else []
    pipeline = Pipeline([*steps, (STEP, spec.estimator)])
    grids = [{pipeline_key(key): values for key, values in grid.items()} for grid in spec.grids]
    return GridSearchCV(pipeline, grids, scoring=selection_metric(monitor), cv=LeaveOneGroupOut(), refit=True)


def pipeline_key(key: str) -> str:
    """A grid's key as the pipeline names it: `layers` and `estimator` are steps, other keys the estimator's."""
    if key == "layers":
        return "layers__layers"
    return key if key == STEP else f"{STEP}__{key}"


def selected(params: dict[str, Any]) -> str:
    """The chosen candidate in words: `estimator=LogisticRegression layers=all C=0.1` (steps, then settings)."""
    ordered = sorted(params.items(), key=lambda item: item[0].count("__"))
    said = [f"{key.split('__')[-1]}={_named(value)}" for key, value in ordered]
    return " ".join(said) or "the only candidate"


def _named(value: Any) -> Any:
    """An estimator by its class name; any other value as it is."""
    return type(value).__name__ if hasattr(value, "fit") else value


def select_and_fit(
    spec: ScikitLearnHead, rows: np.ndarray, labels: np.ndarray, speakers: list[str], standardize: bool, monitor: str
) -> GridSearchCV:
    """The fitted search over the given clips only (the run's training and validation speakers)."""
    if len(set(speakers)) < 2:
        raise ConfigError("a scikit-learn head chooses its hyperparameters over 2 speakers or more: use more speakers")
    return search(spec, standardize, monitor).fit(rows, labels, groups=speakers)


def fit_estimator(
    spec: ScikitLearnHead, datamodule: EmotionDataModule, logger: Any, monitor: str
) -> tuple[EstimatorHead, dict[str, float], np.ndarray, np.ndarray]:
    """Select, fit and test `spec` on the datamodule's split, logging to `logger`'s run: the fitted head, the
    metrics, and the test clips' true and predicted class indices."""
    table, split = datamodule.table, datamodule.split
    assert table is not None and split is not None
    names = list(datamodule.features.shapes())
    head = EstimatorHead(None, spec.classes, names, datamodule.normalizer)
    labels = np.array([spec.classes.index(clip.emotion) for clip in table.clips])
    chosen = split.train + split.val  # never the test speakers'
    rows = head.rows({name: table.tensors[name][chosen] for name in names})
    speakers = [table.clips[i].speaker for i in chosen]
    fitted = select_and_fit(spec, rows, labels[chosen], speakers, datamodule.normalizer.mode != "none", monitor)
    head.estimator = fitted.best_estimator_
    logger.log_hyperparams({"selected": selected(fitted.best_params_), "candidates": len(fitted.cv_results_["params"])})
    y_true = labels[split.test]
    y_pred = head.probabilities({name: table.tensors[name][split.test] for name in names}).argmax(dim=1).numpy()
    metrics = {f"test/{key}": value for key, value in scores(y_true, y_pred).items()}
    metrics |= {monitor: float(fitted.best_score_), best_metric(monitor): float(fitted.best_score_)}
    logger.log_metrics(metrics)
    reports.log_test_report(logger.experiment, logger.run_id, y_true, y_pred, list(spec.classes))
    return head, metrics, y_true, y_pred


def save_head(head: EstimatorHead, recipe: dict[str, Any], folder: str | Path) -> Path:
    """The fitted head as `model.skops` in `folder` (the run's checkpoint)."""
    path = Path(folder) / "model.skops"
    path.parent.mkdir(parents=True, exist_ok=True)
    head.save(path, recipe)
    return path
