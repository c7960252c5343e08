"""Hydra/OmegaConf set-up shared by the command-line apps: config folder and resolvers."""

from __future__ import annotations

import inspect
import os
import types
import typing
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from emotion.errors import ConfigError

#: The `conf/` folder at the project's top level (the package is installed in editable mode).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


#: Set to a Lightning precision (`32-true`), it replaces the CPU's own choice: to run a suite as on the other kind
#: of CPU (`EMOTION_CPU_PRECISION=32-true make test` on a CPU with bfloat16).
CPU_PRECISION_VARIABLE = "EMOTION_CPU_PRECISION"


def cpu_precision() -> str:
    """`bf16-mixed` where the CPU has native bfloat16 (faster training: docs/performance.md), else `32-true`;
    `EMOTION_CPU_PRECISION` overrides both."""
    if os.environ.get(CPU_PRECISION_VARIABLE):
        return os.environ[CPU_PRECISION_VARIABLE]
    return "bf16-mixed" if native_bf16() else "32-true"


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the platform's word for it: what a timing names."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16, AMX): what training and encoding precision follow."""
    import torch  # here, not at the top: the CLIs read their arguments before torch loads

    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


#: The variable naming the speaker profiles store's SQLAlchemy URL (`none`: keep no profiles).
PROFILES_VARIABLE = "EMOTION_PROFILES"
#: The store used when the variable is unset: an SQLite file in the user's cache folder, made on first use.
DEFAULT_PROFILES = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emotion" / "profiles.db"


#: The project's folder (that of `conf/`): home of the default MLflow store, `mlruns.db`, and `mlartifacts/`.
PROJECT_ROOT = CONFIG_DIR.parent


def artifacts_beside(tracking_uri: str) -> str:
    """Where a store's new experiments keep artifacts: `mlartifacts/` beside its SQLite file, else the project's."""
    if tracking_uri.startswith("sqlite:///"):
        return str(Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts")
    return str(PROJECT_ROOT / "mlartifacts")


def register_resolvers() -> None:
    """Resolvers the configs use: `${cpu_precision:}`, `${project_root:}`, `${artifacts_beside:URI}`."""
    for name, resolver in (
        ("cpu_precision", cpu_precision),
        ("project_root", lambda: str(PROJECT_ROOT)),
        ("artifacts_beside", artifacts_beside),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def logger_defaults() -> dict[str, str]:
    """The settings of `conf/logger/mlflow.yaml` (tracking URI, experiment) for the CLIs that are not Hydra apps."""
    register_resolvers()
    config = OmegaConf.load(CONFIG_DIR / "logger" / "mlflow.yaml")
    return {key: str(value) for key, value in OmegaConf.to_container(config, resolve=True).items()}


#: Annotations a value given on the command line is checked against, and how the error names them.
_SCALARS: dict[type, str] = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def check_types(cfg: DictConfig, groups: tuple[str, ...]) -> None:
    """ConfigError naming the key, the value and the type needed, for a scalar that its `_target_` cannot take.

    Each group's node (and nested nodes with a `_target_`) is checked against the annotations of its
    target's parameters, where they are plain int, float, bool or str (optionally `| None`); others pass.
    Without this, `features.n_mfcc=abc` would fail deep inside the target with a bare TypeError.
    """
    for group in groups:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            _check_node(node, group)


def _check_node(node: DictConfig, key: str) -> None:
    hints = _parameter_hints(node.get("_target_"))
    for name, value in node.items():
        if isinstance(value, DictConfig):
            _check_node(value, f"{key}.{name}")
            continue
        needed = _scalar_type(hints.get(str(name)))
        if needed is None or value is None or _fits(value, needed):
            continue
        raise ConfigError(f"{key}.{name}={value!r}: {_SCALARS[needed]} is needed")


def _parameter_hints(target: str | None) -> dict[str, Any]:
    if not target:
        return {}
    try:
        cls = get_class(target)
        return typing.get_type_hints(cls.__init__ if inspect.isclass(cls) else cls)
    except Exception:  # an unimportable or unannotated target: nothing to check against
        return {}


def _scalar_type(hint: Any) -> type | None:
    """int, float, bool or str for a hint that is one of them, or a union with exactly one of them; else None."""
    if hint in _SCALARS:
        return hint
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    scalars = [a for a in typing.get_args(hint) if a in _SCALARS]  # `float | Tensor`: a config can give a float
    return scalars[0] if len(scalars) == 1 else None


def _fits(value: Any, needed: type) -> bool:
    if needed is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if needed is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, needed)


def check_before_run(cfg: DictConfig) -> None:
    """Every mistake that can be seen in the config alone, as one ConfigError, before any run is opened or
    any clip read: missing values, scalar types, unknown Trainer options, a GPU that is not there, a data
    folder that does not exist, and a monitored metric no run logs."""
    check_data_folders(cfg.data)  # first: a corpus without a folder says which folder it needs
    check_complete(cfg)
    check_types(cfg, ("data", "features", "model", "trainer"))
    check_trainer(cfg.trainer)
    from emotion.metrics import EPOCH_METRICS  # here: scikit-learn loads once the arguments are read

    if cfg.monitor not in EPOCH_METRICS:
        raise ConfigError(f"monitor={cfg.monitor}: no run logs it; choose one of {EPOCH_METRICS}")


def check_data_folders(data: DictConfig) -> None:
    """ConfigError if a real corpus has no folder (or manifest file), or names one that does not exist."""
    folders = dict(data.get("roots") or {}) or {"root": data.get("root")}
    manifest = data.get("reader") == "manifest"  # its root is the manifest file
    if data.get("synthetic") is None and None in folders.values():
        missing = "data.root" if "root" in folders else next(f"data.roots.{k}" for k, v in folders.items() if v is None)
        what = "the manifest file (CSV, TSV, JSON or JSON lines)" if manifest else "the folder that holds the corpus"
        raise ConfigError(f"data={data.name} needs {missing}=PATH: {what}")
    for key, folder in folders.items():
        if folder is None:
            continue
        where = "data.root" if key == "root" else f"data.roots.{key}"
        path = Path(str(folder)).expanduser()
        if manifest and not path.is_file():
            raise ConfigError(f"{where}={folder}: no such manifest file")
        if not manifest and not path.is_dir():
            raise ConfigError(f"{where}={folder}: {'not a folder' if path.exists() else 'no such folder'}")


def check_complete(cfg: DictConfig) -> None:
    """ConfigError naming the first mandatory value (`???`) that was not given."""
    for key in _missing_keys(cfg, ""):
        raise ConfigError(f"{key} must be given ({key}=...)")


def _missing_keys(node: DictConfig, prefix: str) -> list[str]:
    found = []
    for key in node:
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            found.append(path)
        elif isinstance(node.get(key), DictConfig):
            found += _missing_keys(node[key], f"{path}.")
    return found


def check_trainer(trainer: DictConfig) -> None:
    """ConfigError for a Trainer option Lightning does not have (with the closest ones), or a GPU not there."""
    import difflib

    from lightning.pytorch import Trainer

    known = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    for name in trainer:
        if name != "_target_" and name not in known:
            close = difflib.get_close_matches(str(name), sorted(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"trainer.{name}: not an option of Lightning's Trainer{hint}")
    if str(trainer.get("accelerator")) in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer=gpu, but this machine has no GPU that torch can use: use trainer=cpu")
