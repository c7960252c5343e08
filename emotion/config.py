"""Hydra/OmegaConf set-up shared by the command-line apps: config folder and resolvers."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

#: The `conf/` folder at the project's top level (the package is installed in editable mode).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def cpu_precision() -> str:
    """`bf16-mixed` where the CPU has native bfloat16 (about 2x faster training here), else `32-true`."""
    import torch  # here, not at the top: the CLIs read their arguments before torch loads

    native_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bf16-mixed" if native_bf16 else "32-true"


#: The project's folder (that of `conf/`): home of the default MLflow store, `mlruns.db`, and `mlartifacts/`.
PROJECT_ROOT = CONFIG_DIR.parent


def register_resolvers() -> None:
    """Resolvers the configs use: `${cpu_precision:}`, `${project_root:}`."""
    if not OmegaConf.has_resolver("cpu_precision"):
        OmegaConf.register_new_resolver("cpu_precision", cpu_precision)
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def logger_defaults() -> dict[str, str]:
    """The settings of `conf/logger/mlflow.yaml` (tracking URI, experiment) for the CLIs that are not Hydra apps."""
    register_resolvers()
    config = OmegaConf.load(CONFIG_DIR / "logger" / "mlflow.yaml")
    return {key: str(value) for key, value in OmegaConf.to_container(config, resolve=True).items()}
