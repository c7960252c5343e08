"""One run of a scikit-learn head (`model=logreg`, `svm`, `heads`) on cached features: select, fit, test, log.

The hyperparameters of `model.grid` are chosen over the run's training and validation speakers together, in
speaker folds (`model.inner_folds`: leave one speaker out, or k folds for many speakers; each held-out speaker
normalised as the `normalize` stage says, like any other), the candidates fitted in parallel (`model.n_jobs`):
the test speakers choose nothing, and their clips are not read before the chosen model predicts them. The chosen
model is then fitted on those speakers' clips, and calibrated on the same folds if it gives no probabilities (an
SVC): once, not inside every candidate. `val/<metric>` is the chosen candidate's mean over the held-out folds,
the run's monitor and a sweep's objective. A speaker-adaptive run also selects and fits the same grid on the
features before the `normalize` stage: the non-adaptive twin that answers for speakers with too few clips; and
with `normalize.learn_blend`, how much each answer weighs for a speaker of n clips, learned on the same speaker
folds from the training speakers' own k-clip curves (`emotion.pipeline.blend`), kept in the recipe. The
run logs what a network's run logs (params, split, test scores, confusion matrix) and keeps the fitted head as a
skops file (`model.skops`), its checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, GroupKFold, LeaveOneGroupOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from emotion.data.blending import BlendCurve
from emotion.data.datamodule import EmotionDataModule
from emotion.errors import ConfigError
from emotion.metrics import METRICS, scores
from emotion.models.estimator import AUTO_FOLDS, AUTO_LOSO_SPEAKERS, EstimatorHead, LayerView, ScikitLearnHead
from emotion.pipeline.blend import Fit, InnerClips, learn_curve
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


#: One speaker fold of the inner selection: the rows it fits on, and those it scores.
Folds = tuple[np.ndarray, np.ndarray]


def search(spec: ScikitLearnHead, standardize: bool, monitor: str, folds: list[Folds]) -> GridSearchCV:
    """The search: the layer view, the standardiser (unless `normalize=none`) and the estimator, every candidate of
    the grids scored on the speaker `folds`, `model.n_jobs` at once (the best is fitted afterwards: `fitted_best`)."""
    steps = [("layers", LayerView(spec.layers, spec.num_layers))]
    steps += [("scale", StandardScaler())] if standardize else []
    pipeline = Pipeline([*steps, (STEP, spec.estimator)])
    grids = [{pipeline_key(key): values for key, values in grid.items()} for grid in spec.grids]
    return GridSearchCV(pipeline, grids, scoring=selection_metric(monitor), cv=folds, refit=False, n_jobs=spec.n_jobs)


def speaker_folds(inner_folds: str | int, speakers: list[str]) -> list[Folds]:
    """The inner selection's folds over the given clips' speakers: leave one speaker out (`loso`, or `auto` up to
    `AUTO_LOSO_SPEAKERS` speakers), else k speaker folds (`AUTO_FOLDS` for `auto`), no speaker in two."""
    count = len(set(speakers))
    if inner_folds == "loso" or (inner_folds == "auto" and count <= AUTO_LOSO_SPEAKERS):
        splitter: Any = LeaveOneGroupOut()
    else:
        splitter = GroupKFold(n_splits=min(AUTO_FOLDS if inner_folds == "auto" else int(inner_folds), count))
    return list(splitter.split(np.zeros(len(speakers)), groups=speakers))


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
) -> tuple[GridSearchCV, Any]:
    """The search over the given clips only (the run's training and validation speakers), and its best candidate
    fitted on them all (calibrated on the same folds when it gives no probabilities)."""
    if len(set(speakers)) < 2:
        raise ConfigError("a scikit-learn head chooses its hyperparameters over 2 speakers or more: use more speakers")
    folds = speaker_folds(spec.inner_folds, speakers)
    fitted = search(spec, standardize, monitor, folds).fit(rows, labels)
    return fitted, fitted_best(fitted, rows, labels, folds)


def fitted_best(fitted: GridSearchCV, rows: np.ndarray, labels: np.ndarray, folds: list[Folds]) -> Any:
    """The search's best candidate fitted on every row; one without `predict_proba` (an SVC) is wrapped in a
    sigmoid calibration fitted on the search's folds (one SVC on all rows: `ensemble=False`). The chosen params are
    cloned, as the search clones each candidate's: a grid's estimator is one object, and fitting it in place would
    make a speaker-adaptive head and its twin, selected from the same grid, one and the same fitted estimator."""
    best = clone(fitted.estimator).set_params(**clone(fitted.best_params_, safe=False))
    if hasattr(best, "predict_proba"):
        return best.fit(rows, labels)
    return CalibratedClassifierCV(best, method="sigmoid", cv=folds, ensemble=False).fit(rows, labels)


def fit_estimator(
    spec: ScikitLearnHead, datamodule: EmotionDataModule, logger: Any, monitor: str
) -> tuple[EstimatorHead, dict[str, float], np.ndarray, np.ndarray]:
    """Select, fit and test `spec` on the datamodule's split, logging to `logger`'s run: the fitted head (with its
    non-adaptive twin when the run is speaker-adaptive), the metrics, and the test clips' true and predicted class
    indices."""
    table, split = datamodule.table, datamodule.split
    assert table is not None and split is not None
    names = list(datamodule.features.shapes())
    head = EstimatorHead(None, spec.classes, names, datamodule.normalizer)
    labels = np.array([spec.classes.index(clip.emotion) for clip in table.clips])
    chosen = split.train + split.val  # never the test speakers'
    speakers = [table.clips[i].speaker for i in chosen]
    rows = head.rows({name: table.tensors[name][chosen] for name in names})
    standardize = datamodule.normalizer.mode != "none"
    fitted, head.estimator = select_and_fit(spec, rows, labels[chosen], speakers, standardize, monitor)
    said = {"selected": selected(fitted.best_params_), "candidates": len(fitted.cv_results_["params"])}
    if datamodule.unnormalized is not None:
        raw = head.rows({name: datamodule.unnormalized.tensors[name][chosen] for name in names})
        twin, head.fallback = select_and_fit(spec, raw, labels[chosen], speakers, True, monitor)
        said["fallback_selected"] = selected(twin.best_params_)
        if datamodule.normalizer.learn_blend:
            clips = inner_clips(datamodule, head, chosen, rows, raw, labels[chosen])
            said["blend_curve"] = keep_blend(spec, head, clips, logger)
    logger.log_hyperparams(said)
    y_true = labels[split.test]
    y_pred = head.probabilities({name: table.tensors[name][split.test] for name in names}).argmax(dim=1).numpy()
    metrics = {f"test/{key}": value for key, value in scores(y_true, y_pred).items()}
    metrics |= {monitor: float(fitted.best_score_), best_metric(monitor): float(fitted.best_score_)}
    logger.log_metrics(metrics)
    reports.log_test_report(logger.experiment, logger.run_id, y_true, y_pred, list(spec.classes))
    return head, metrics, y_true, y_pred


def inner_clips(
    datamodule: EmotionDataModule, head: EstimatorHead, chosen: list[int], rows: np.ndarray, raw: np.ndarray,
    labels: np.ndarray,
) -> InnerClips:  # fmt: skip
    """The run's training and validation clips (`chosen`) as the blend's learning reads them, with the other
    classes' clips of their speakers (label-free profiles)."""
    table, unnormalized, pool = datamodule.table, datamodule.unnormalized, datamodule.pool
    assert table is not None and unnormalized is not None
    clips = [table.clips[i] for i in chosen]
    features = {name: unnormalized.tensors[name][chosen] for name in head.input_names}
    speakers = [clip.speaker for clip in clips]
    original = np.array([clip.copy == 0 for clip in clips])
    theirs = set(speakers)
    extra = [i for i, clip in enumerate(pool.clips) if clip.speaker in theirs] if pool is not None else []
    if not extra:
        return InnerClips(features, rows, raw, labels, speakers, original)
    own = {name: pool.tensors[name][extra] for name in head.input_names}
    return InnerClips(features, rows, raw, labels, speakers, original, own, [pool.clips[i].speaker for i in extra])


#: The speaker folds an SVC is calibrated on when the blend's learning refits it in an inner fold.
CALIBRATION_FOLDS = 3


def refit_like(fitted: Any) -> Fit:
    """Fits of the candidate `fitted` is (a fitted head) afresh on other clips; one calibrated after selection (an
    SVC) calibrated again on `CALIBRATION_FOLDS` speaker folds of those clips."""

    def fit(rows: np.ndarray, labels: np.ndarray, speakers: list[str]) -> Any:
        if not isinstance(fitted, CalibratedClassifierCV):
            return clone(fitted).fit(rows, labels)
        folds = speaker_folds(CALIBRATION_FOLDS, speakers)
        return CalibratedClassifierCV(clone(fitted.estimator), method="sigmoid", cv=folds, ensemble=False).fit(
            rows, labels
        )

    return fit


def learned_blend(inner_folds: str | int, head: EstimatorHead, clips: InnerClips) -> tuple[BlendCurve | None, dict]:
    """The blend curve of `head` (fitted, with its twin) learned on its training speakers' `clips` in the speaker
    folds `inner_folds` says (`emotion.pipeline.blend`), and what it was learned from; under 3 speakers (no inner
    fold to calibrate in), none: the rule of a model without a curve."""
    if len(set(clips.speakers)) < 3:
        return None, {"curve": None, "why": "under 3 speakers"}
    folds = speaker_folds(inner_folds, clips.speakers)
    start = time.perf_counter()
    fits = refit_like(head.estimator), refit_like(head.fallback)
    curve, figures = learn_curve(clips, folds, *fits, head.normalizer, head.rows, len(head.classes))
    return curve, {"curve": curve, "sizes": figures, "seconds": round(time.perf_counter() - start, 2)}


def keep_blend(spec: ScikitLearnHead, head: EstimatorHead, clips: InnerClips, logger: Any) -> str:
    """`learned_blend`'s curve set on the head's normaliser and in the recipe it is saved with, its figures logged
    (`blend_curve.json`); the curve in words."""
    curve, said = learned_blend(spec.inner_folds, head, clips)
    logger.experiment.log_dict(logger.run_id, said, "blend_curve.json")
    if curve is None:
        return "none (under 3 speakers)"
    head.normalizer.blend_curve = curve
    spec.hparams["recipe"]["normalize"]["blend_curve"] = [list(point) for point in curve]
    return " ".join(f"{clips_}:{weight}" for clips_, weight in curve)


def save_head(head: EstimatorHead, recipe: dict[str, Any], folder: str | Path) -> Path:
    """The fitted head as `model.skops` in `folder` (the run's checkpoint)."""
    path = Path(folder) / "model.skops"
    path.parent.mkdir(parents=True, exist_ok=True)
    head.save(path, recipe)
    return path
