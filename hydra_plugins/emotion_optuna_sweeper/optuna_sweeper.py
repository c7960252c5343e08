"""Hydra Sweeper plugin for Optuna >= 4 with pruning; the logic lives in `emotion.sweep.sweeper`."""

from __future__ import annotations

import sys
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """`hydra/sweeper=optuna`: its options are documented in `conf/hydra/sweeper/optuna.yaml`."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = DictConfig(options)
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        # Imported here: Hydra imports every plugin at start-up, and Optuna and MLflow take seconds to load.
        from emotion.errors import EmotionError
        from emotion.sweep.sweeper import StudySweep

        assert self.config is not None and self.launcher is not None
        launcher = self.launcher

        def launch(batch: list[list[str]], first_job_index: int) -> Any:
            self.validate_batch_is_legal(batch)
            return launcher.launch(batch, initial_job_idx=first_job_index)

        try:
            return StudySweep(self.options, self.config).run(arguments, launch)
        except EmotionError as exc:  # one line, as the app says it, rather than Hydra's traceback
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
