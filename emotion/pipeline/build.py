"""Every object of a run, from its config group's `_target_`: features, datamodule, LightningModule, callbacks,
logger, and the tags that make runs easy to filter."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from emotion.data.datamodule import EmotionDataModule
from emotion.data.features import FeatureSet
from emotion.errors import ConfigError, EmotionError
from emotion.models.estimator import ScikitLearnHead
from emotion.models.module import EmotionClassifier
from emotion.models.network import architecture_name
from emotion.serving.encoder_refs import recorded_encoder
from emotion.serving.recipes import parse_recipe
from emotion.tracking.checkpoints import resolve_checkpoint
from emotion.tracking.names import OVERRIDES_TAG


def built(node: Any, **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)`; a mistake the target reports (an EmotionError) comes out as itself, one
    line, not wrapped in Hydra's InstantiationException."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, EmotionError):
            raise exc.__cause__ from None
        raise


def build_datamodule(cfg: DictConfig, features: FeatureSet) -> EmotionDataModule:
    """`data`, reading with `features` into `paths.cache_dir`, augmented by `augment`, split by `split` (its fold
    `split.fold`, or the first), normalised by `normalize`."""
    augment = built(cfg.augment, _convert_="all") if cfg.augment else None
    split = built(cfg.split)
    fold = int(cfg.split.get("fold") or 0)
    normalize = built(cfg.normalize, shapes=features.shapes())
    return built(
        cfg.data,
        features=features,
        cache_dir=cfg.paths.cache_dir,
        augment=augment,
        split=split,
        fold=fold,
        normalize=normalize,
    )


def build_module(cfg: DictConfig, features: FeatureSet) -> EmotionClassifier | ScikitLearnHead:
    """`model`, its net built for the shapes `features` produce (or a scikit-learn head's spec); ConfigError naming
    both if they do not fit.

    Branch checkpoints given as MLflow run IDs (a stacked fusion) are fetched here: models read files only.
    """
    model = cfg.model
    if "net" in model and model.net.get("branch_checkpoints"):
        model = OmegaConf.merge(model, {"net": {"branch_checkpoints": local_checkpoints(model.net.branch_checkpoints)}})
    try:
        module = built(model, classes=list(cfg.data.classes), input_shapes=features.shapes(), _convert_="all")
    except ConfigError as exc:
        network = cfg.model.net._target_.rsplit(".", 1)[-1] if "net" in cfg.model else architecture(cfg)
        raise ConfigError(f"model {network} cannot take features={features.name}: {exc}") from None
    # Set after instantiation: passed to `instantiate`, the recipe's own `_target_`s would be built.
    module.hparams["recipe"] = inference_recipe(cfg)
    return module


def inference_recipe(cfg: DictConfig) -> dict[str, Any]:
    """What the trained model needs to be built again from its checkpoint alone, in plain values: the net's and
    the features' configs, the front end's duration limits and the `normalize` stage's settings
    (`EmotionClassifier`'s `recipe`), written through the schema that reads it (`emotion.serving.recipes`).

    A stacked fusion's net is recorded as end-to-end without branch checkpoints (the checkpoint holds every
    weight), and an encoder's folder or weights file by its name alone (the host that loads the model says where
    it keeps encoders).
    """
    net = OmegaConf.to_container(cfg.model.net, resolve=True) if "net" in cfg.model else {}
    features = OmegaConf.to_container(cfg.features, resolve=True)
    assert isinstance(net, dict) and isinstance(features, dict)
    if net.get("mode") == "stacked":
        net |= {"mode": "end_to_end", "branch_checkpoints": None}
    if isinstance(features.get("encoder"), str):
        features["encoder"], features["checkpoint"] = recorded_encoder(features["encoder"], features.get("checkpoint"))
    front_end = {"min_duration": float(cfg.data.min_duration), "max_duration": float(cfg.data.max_duration)}
    normalize = {key: value for key, value in cfg.normalize.items() if key != "_target_"}
    recipe = {"net": net, "features": features, "front_end": front_end, "normalize": normalize}
    return parse_recipe(recipe, "the run").to_dict()


def local_checkpoints(sources: Any) -> list[str]:
    """Checkpoint files for sources that are files or MLflow run IDs (`runs:/ID` too)."""
    return [str(resolve_checkpoint(str(source))) for source in sources]


def architecture(cfg: DictConfig) -> str:
    """The net's `arch` name (`cnn2d`), else its class name; a scikit-learn head's `name` (`logreg`)."""
    if "net" not in cfg.model:
        return str(cfg.model.get("name", "estimator"))
    return architecture_name(get_class(cfg.model.net._target_))


def build_callbacks(cfg: DictConfig) -> tuple[ModelCheckpoint, list[pl.Callback]]:
    """Every `callbacks.NAME` with a `_target_`, and the ModelCheckpoint among them (the checkpoint a run keeps)."""
    callbacks = [built(entry) for entry in cfg.callbacks.values() if isinstance(entry, DictConfig)]
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    if len(checkpoints) != 1:
        raise ConfigError(f"callbacks need one ModelCheckpoint (callbacks=[default,...]), found {len(checkpoints)}")
    return checkpoints[0], callbacks


def checkpoint_epoch(path: str) -> int | None:
    """The epoch of a checkpoint file named by `callbacks.model_checkpoint.filename` (`best-epoch07.ckpt`)."""
    match = re.search(r"epoch(\d+)", Path(path).name)
    return int(match[1]) if match else None


def build_logger(cfg: DictConfig, run_name: str, tags: dict[str, str]) -> MLFlowLogger:
    """`logger`: a new MLflow run named `run_name` with `tags`."""
    return built(cfg.logger, run_name=run_name, tags=tags)


def task_overrides() -> str:
    """The command line's overrides of this job (a sweep's trial: its parameters too), as one string."""
    if not HydraConfig.initialized():
        return ""
    return shlex.join(o for o in HydraConfig.get().overrides.task if not o.startswith("+trial."))


def run_tags(cfg: DictConfig, leaky: bool) -> dict[str, str]:
    """Tags that make runs easy to filter in the MLflow UI, with the user's own (`logger.tags`)."""
    user = {str(k): str(v) for k, v in (cfg.logger.get("tags") or {}).items()}
    overrides = {OVERRIDES_TAG: task_overrides()} if HydraConfig.initialized() else {}
    return (
        user
        | overrides
        | {
            "architecture": architecture(cfg),
            "features": get_class(cfg.features._target_).name,
            "data": cfg.data.name,
            "split": get_class(cfg.split._target_).name,
            "window": cfg.features.window.mode,
            "augmentation": cfg.augment.get("name", "none") if cfg.augment else "none",
            "leaky": str(leaky).lower(),
            "normalization": cfg.normalize.mode,
            "speaker_adaptive": str(cfg.normalize.mode == "speaker").lower(),
        }
    )


def base_run_name(cfg: DictConfig) -> str:
    """The run name the user gave, else ARCHITECTURE-FEATURES-CORPUS (`cnn2d-logmel-emodb`)."""
    tags = run_tags(cfg, leaky=False)
    return cfg.logger.run_name or f"{tags['architecture']}-{tags['features']}-{tags['data']}"
