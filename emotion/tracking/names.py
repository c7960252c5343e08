"""Names of what runs log, defined once: the pipeline, the sweep, promotion and evaluation read them from here."""

from __future__ import annotations

#: What a run is, when it is not a plain training run: a cross-validation's parent, a study's, an evaluation.
ROLE_TAG = "role"
CV_ROLE = "cv"
STUDY_ROLE = "study"
EVALUATION_ROLE = "evaluation"
#: A cross-validation's fold runs: the fold's number, and the strategy (also on the parent).
FOLD_TAG = "fold"
CV_TAG = "cv"
#: A sweep's trial runs: the study's name and the trial's number.
STUDY_TAG = "study"
TRIAL_TAG = "trial_number"
#: Why a run FAILED, in one line.
ERROR_TAG = "error"
#: The command-line overrides a run was trained with (`emotion-train` with them trains it again).
OVERRIDES_TAG = "overrides"
#: What serving a run's model costs: median wall-clock ms per clip of its whole inference path (emotion.pipeline.cost).
COST_METRIC = "cost/ms_per_clip"


def best_metric(monitor: str) -> str:
    """The name under which a run logs the best value of its monitored metric: `val/uar` -> `val/uar_best`.

    That is the value of the checkpoint the run keeps (and a sweep's trial returns), the one to rank runs by:
    the monitored metric's own last value is its last epoch's.
    """
    return f"{monitor}_best"
