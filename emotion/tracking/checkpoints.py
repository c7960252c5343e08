"""Loading trained weights from a Lightning checkpoint file or from an MLflow run."""

from __future__ import annotations

import re
from pathlib import Path

from emotion.errors import ConfigError

CHECKPOINT_ARTIFACT_DIR = "checkpoints"
_RUN_ID = re.compile(r"^(runs:/)?(?P<run_id>[0-9a-f]{32})/?$")


def resolve_checkpoint(source: str) -> Path:
    """A local checkpoint file for `source`: a `.ckpt` path, or an MLflow run ID (`runs:/ID` too)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    match = _RUN_ID.match(source)
    if match is None:
        raise ConfigError(f"checkpoint {source!r} is neither a file nor an MLflow run ID")
    import mlflow

    try:
        folder = mlflow.artifacts.download_artifacts(run_id=match["run_id"], artifact_path=CHECKPOINT_ARTIFACT_DIR)
    except Exception as exc:  # MLflow raises several types for a missing run or artifact
        raise ConfigError(f"cannot download the checkpoint of MLflow run {match['run_id']}: {exc}") from exc
    checkpoints = sorted(Path(folder).glob("*.ckpt"))
    if not checkpoints:
        raise ConfigError(f"MLflow run {match['run_id']} has no .ckpt under {CHECKPOINT_ARTIFACT_DIR}/")
    return checkpoints[0]
