"""Names of what runs log, defined once: the pipeline, promotion and the notebook read them from here."""

from __future__ import annotations

#: The tag of a cross-validation's parent run (`role`), and of its folds (`fold`: the fold's number).
ROLE_TAG = "role"
FOLD_TAG = "fold"
#: The tags of a sweep's trial runs.
STUDY_TAG = "study"
TRIAL_TAG = "trial_number"
#: The command-line overrides a run was trained with (`emotion-train` with them reproduces it).
OVERRIDES_TAG = "overrides"


def best_metric(monitor: str) -> str:
    """The name under which a run logs the best value of its monitored metric: `val/uar` -> `val/uar_best`.

    That is the value of the checkpoint the run keeps (and a sweep's trial returns), the one to rank runs by:
    the monitored metric's own last value is its last epoch's.
    """
    return f"{monitor}_best"
