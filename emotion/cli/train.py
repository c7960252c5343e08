"""`emotion-train`: train one model on one corpus, tracked in MLflow (a Hydra app).

emotion-train                                  # the report's 2D CNN on the embedded corpus
emotion-train experiment=report_cnn1d_mel      # another of the report's setups
emotion-train data=crema_d data.root=/data/CREMA-D trainer.max_epochs=30
emotion-train data=emodb data.root=/data/emodb/wav split=loso   # leave-one-speaker-out, one run per fold

This module stays light: Hydra reads the arguments and composes the config before torch,
Lightning and MLflow are imported (`emotion.pipeline`), so `--help` and a mistyped override
answer at once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from emotion.cli import fail
from emotion.config import CONFIG_DIR, register_resolvers
from emotion.errors import EmotionError

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _app(cfg: DictConfig) -> dict[str, float]:
    from emotion.pipeline import train  # the heavy libraries, once the config is known to compose

    log_lightning_through_hydra()
    try:
        return train(cfg)
    except EmotionError as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the trial as failed and goes on
        remove_if_untrained(Path(HydraConfig.get().runtime.output_dir))
        fail(str(exc))


def log_lightning_through_hydra() -> None:
    """Lightning's log lines through Hydra's handlers (console and the run's log file) alone.

    Lightning gives its loggers a console handler of their own, so each of its lines printed twice.
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def remove_if_untrained(output_dir: Path) -> None:
    """Remove a run folder that holds no checkpoint (the run stopped at start-up), and its parents left empty.

    Hydra makes `outputs/DATE/TIME/` before the app runs; a run refused at start-up would leave it behind.
    """
    if (output_dir / "checkpoints").exists() or not output_dir.is_dir():
        return
    close_log_files_in(output_dir)
    shutil.rmtree(output_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # rmdir removes empty folders only
        output_dir.parent.rmdir()  # outputs/DATE
        output_dir.parent.parent.rmdir()  # outputs


def close_log_files_in(folder: Path) -> None:
    """Detach and close the root logger's file handlers writing under `folder` (Hydra's `train.log`), so nothing
    logged after the folder is gone tries to reopen it."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(folder.resolve()):
            root.removeHandler(handler)
            handler.close()


def check_composes(overrides: list[str]) -> None:
    """Compose the config of a single run once before Hydra does, so a mistake in an override (an unknown key,
    a config group's unknown option, a value of the wrong type) is one line naming it, with no Hydra wrapper.

    A multirun (sweep grammar), `--cfg`, `--help` and the like are left to Hydra itself.
    """
    if any(argument.startswith("-") for argument in overrides):
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name="config", overrides=overrides)
    except Exception as exc:  # Hydra's and OmegaConf's composition errors share no narrower base class
        fail(one_line(exc))


def one_line(exc: BaseException) -> str:
    """A composition error and its cause in one line, without OmegaConf's `full_key:`/`object_type=` lines and
    Hydra's config search path."""
    parts = [str(exc)] + ([str(exc.__cause__)] if exc.__cause__ and str(exc.__cause__) not in str(exc) else [])
    lines = [line.strip() for part in parts for line in part.splitlines()]
    kept = [line for line in lines if line and not line.startswith(("full_key:", "object_type=", "reference_type="))]
    return " ".join(kept).split(" Config search path:")[0]


def main() -> None:
    """Console entry point."""
    check_composes(sys.argv[1:])
    _app()


if __name__ == "__main__":
    main()
