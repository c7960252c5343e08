"""The training pipeline: one run, or one run per fold of a cross-validation, built from a composed config.

`train(cfg)` takes the config `emotion-train` composes (see `emotion.cli.train`, the thin Hydra app) and
returns the run's results; tests and notebooks call it with configs of their own. `build` makes every object
of a run from its config group's `_target_`; `fit` fits and tests one run; `crossval` runs the folds; `run`
chooses between them.
"""

from emotion.pipeline.run import train

__all__ = ["train"]
