"""Every option of every config group composes, and the objects it describes are built from their `_target_`s.

The options are found by walking `conf/`, so a new option file is tested as soon as it exists: the test of
the list below fails until its group says how to build it. Real corpora and the real Whisper checkpoint of
`../shared` stand in for the corpora and encoders the options name (skipped where they are absent).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from emotion.config import CONFIG_DIR, register_resolvers
from emotion.data.augment import Augmentation
from emotion.data.datamodule import EmotionDataModule
from emotion.data.features import FeatureSet
from emotion.data.normalize import SpeakerNormalizer
from emotion.models.estimator import ScikitLearnHead
from emotion.models.module import EmotionClassifier
from emotion.pipeline.build import build_callbacks, build_datamodule, build_module
from emotion.sweep.search_space import parse_search_space
from emotion.tracking.logger import RunLogger
from tests.test_real_corpora import EMODB, SAVEE

register_resolvers()
WHISPER = Path(__file__).resolve().parents[2] / "shared" / "models" / "whisper-base"
pytestmark = pytest.mark.skipif(
    not (EMODB.is_dir() and SAVEE.is_dir() and WHISPER.is_dir()), reason="no corpora or Whisper base in ../shared"
)


def options() -> list[tuple[str, str]]:
    """(group, option) for every option file under conf/, `hydra/sweeper/sampler` style for nested groups."""
    found = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONFIG_DIR).as_posix()
        if group != ".":
            found.append((group, path.stem))
    return found


def composed(tmp_path: Path, *overrides: str, hydra: bool = False) -> DictConfig:
    base = [
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / 'out'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"logger.artifact_location={tmp_path / 'artifacts'}",
        f"features.encoder={WHISPER}",
    ]
    ssl = any(
        o in ("features=ssl", "model=ssl_head") or o.startswith(("experiment=whisper", "sweep=whisper"))
        for o in overrides
    )
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[*(base if ssl else base[:-1]), *overrides],
            return_hydra_config=hydra,
        )


#: The features each network takes.
FEATURES_OF = {"cnn1d": "mel_mean", "cnn2d": "logmel", "fusion": "logmel_mfcc", "linear": "egemaps",
               "ssl_head": "ssl", "tdnn": "logmel", "logreg": "egemaps", "svm": "egemaps", "heads": "ssl"}  # fmt: skip
#: The overrides that give each corpus option its data.
DATA_OF = {
    "base": ["data.name=mine", f"data.root={EMODB}", "data.reader=emodb"],
    "emodb": [f"data.root={EMODB}"],
    "savee": [f"data.root={SAVEE}"],
    "mix": [f"data.roots.emodb={EMODB}", f"data.roots.savee={SAVEE}"],
    "manifest": ["data.root=labels.csv"],
}


def built_module(cfg: DictConfig) -> EmotionClassifier | ScikitLearnHead:
    features: FeatureSet = instantiate(cfg.features)
    module = build_module(cfg, features)
    if isinstance(module, ScikitLearnHead):  # no optimizer: scikit-learn fits it
        assert hasattr(module.estimator, "predict_proba") and module.hparams["recipe"]
        return module
    optimizers = module.configure_optimizers()  # the optimizer and scheduler of `model`, built
    optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
    assert isinstance(optimizer, get_class(cfg.model.optimizer._target_))
    if cfg.model.get("scheduler"):
        assert isinstance(optimizers["lr_scheduler"]["scheduler"], get_class(cfg.model.scheduler._target_))
    return module


def built_datamodule(cfg: DictConfig) -> EmotionDataModule:
    datamodule = build_datamodule(cfg, instantiate(cfg.features))
    assert datamodule.splitter.name == instantiate(cfg.split).name
    return datamodule


def build_data(tmp_path: Path, option: str) -> None:
    overrides = [f"data={option}", *DATA_OF.get(option, [f"data.root={tmp_path}"])]
    if option == "manifest":
        (tmp_path / "labels.csv").write_text(f"path,label,speaker\n{next(EMODB.glob('*.wav'))},angry,03\n")
        overrides[1] = f"data.root={tmp_path / 'labels.csv'}"
    datamodule = built_datamodule(composed(tmp_path, *overrides))
    if option in ("emodb", "savee", "manifest", "base"):
        assert datamodule.read_manifest().clips  # its reader reads the corpus it names


def build_augment(tmp_path: Path, option: str) -> None:
    cfg = composed(tmp_path, f"augment={option}")
    datamodule = built_datamodule(cfg)
    assert isinstance(datamodule.augmentation, Augmentation)
    assert (datamodule.augmentation.wave is None) == (option in ("none", "spec"))
    assert (datamodule.augmentation.spec is None) == (option in ("none", "noise", "segments"))


def build_features(tmp_path: Path, option: str) -> None:
    features = instantiate(composed(tmp_path, f"features={option}").features)
    assert isinstance(features, FeatureSet) and features.shapes()


def build_nested_features(tmp_path: Path, group: str, option: str) -> None:
    features = instantiate(composed(tmp_path, f"{group}={option}").features)
    assert features.shapes()


def build_model(tmp_path: Path, option: str) -> None:
    cfg = composed(tmp_path, f"model={option}", f"features={FEATURES_OF[option]}")
    if "net" not in cfg.model:  # a scikit-learn head: a classifier (calibrated after selection if it must be)
        head = build_module(cfg, instantiate(cfg.features))
        assert isinstance(head, ScikitLearnHead) and hasattr(head.estimator, "decision_function")
        assert head.name == option and head.hparams["recipe"]["normalize"]["mode"] == "population"
        return
    module = built_module(cfg).eval()
    inputs = {name: torch.randn(2, *shape) for name, shape in module.hparams["input_shapes"].items()}
    assert module(inputs).shape == (2, 6)


def build_normalize(tmp_path: Path, option: str) -> None:
    normalizer = built_datamodule(composed(tmp_path, f"normalize={option}")).normalizer
    assert isinstance(normalizer, SpeakerNormalizer) and normalizer.mode == option
    assert normalizer.adaptive == (option == "speaker")


def build_training_part(tmp_path: Path, group: str, option: str) -> None:
    built_module(composed(tmp_path, "model=cnn1d", "features=mel_mean", f"{group}={option}"))


def build_trainer(tmp_path: Path, option: str) -> None:
    cfg = composed(tmp_path, f"trainer={option}")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        # every key is a Trainer argument (an unknown one is a TypeError first); only the device is missing
        with pytest.raises(InstantiationException, match="No supported gpu backend found"):
            instantiate(cfg.trainer, logger=False)
        return
    assert isinstance(instantiate(cfg.trainer, logger=False), pl.Trainer)


def build_split(tmp_path: Path, option: str) -> None:
    data = ["data=mix", *DATA_OF["mix"]] if option == "loco" else []
    cfg = composed(tmp_path, f"split={option}", *data)
    splitter = instantiate(cfg.split)
    assert splitter.name == option and splitter.cross_validates == (option in ("kfold", "loso", "loco"))
    assert built_datamodule(cfg).splitter.name == option


def build_callbacks_option(tmp_path: Path, option: str) -> None:
    cfg = composed(tmp_path, f"callbacks=[default,{option}]")
    checkpoint, callbacks = build_callbacks(cfg)
    assert checkpoint.monitor == cfg.monitor and len(callbacks) == len(cfg.callbacks)


def build_logger(tmp_path: Path, option: str) -> None:
    logger = instantiate(composed(tmp_path, f"logger={option}").logger, run_name="configs", tags={"k": "v"})
    assert isinstance(logger, RunLogger) and logger.run_id  # a run in the test's store


def build_paths(tmp_path: Path, option: str) -> None:
    cfg = composed(tmp_path, f"paths={option}")
    assert Path(cfg.paths.cache_dir) == tmp_path / "cache"


def build_experiment(tmp_path: Path, option: str) -> None:
    cfg = composed(tmp_path, f"experiment={option}")
    built_module(cfg)
    built_datamodule(cfg)
    build_callbacks(cfg)


def build_sweep(tmp_path: Path, option: str) -> None:
    cfg = composed(tmp_path, f"sweep={option}", hydra=True)
    sweeper = cfg.hydra.sweeper
    space, _ = parse_search_space(sweeper.params, sweeper.search_space, [])
    assert space and all(isinstance(d, optuna.distributions.BaseDistribution) for d in space.values())
    overrides = [f"{key}={distribution_value(d)}" for key, d in space.items()]
    built_module(composed(tmp_path, f"sweep={option}", *(o for o in overrides if not o.startswith("features/"))))


def distribution_value(distribution: optuna.distributions.BaseDistribution) -> object:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return str(distribution.choices[0]).lower()
    return distribution.low


def build_debug(tmp_path: Path, option: str) -> None:
    cfg = composed(tmp_path, f"debug={option}")
    assert isinstance(instantiate(cfg.trainer, logger=False), pl.Trainer)


def build_hydra_sweeper(tmp_path: Path, group: str, option: str) -> None:
    cfg = composed(tmp_path, "hydra/sweeper=optuna", f"{group}={option}", hydra=True)
    sweeper = cfg.hydra.sweeper
    node = OmegaConf.to_container(sweeper, resolve=False)
    if group == "hydra/sweeper":  # Hydra's plugin discovery imports the plugin's module under a name of its own
        plugin = instantiate(sweeper)
        assert type(plugin).__name__ == "OptunaSweeper" and plugin.options.n_trials == sweeper.n_trials
        return
    part = sweeper[group.rsplit("/", 1)[1]]
    extra = {"search_space": {"model.optimizer.lr": [1e-3, 1e-2]}} if option == "grid" else {}
    built = instantiate(part, **extra)
    assert isinstance(built, optuna.samplers.BaseSampler | optuna.pruners.BasePruner), node


#: How each group's options are built.
BUILDERS: dict[str, Callable[[Path, str, str], None]] = {
    "data": lambda t, g, o: build_data(t, o),
    "augment": lambda t, g, o: build_augment(t, o),
    "features": lambda t, g, o: build_features(t, o),
    "features/spectral": build_nested_features,
    "features/window": build_nested_features,
    "model": lambda t, g, o: build_model(t, o),
    "normalize": lambda t, g, o: build_normalize(t, o),
    "optimizer": build_training_part,
    "scheduler": build_training_part,
    "loss": build_training_part,
    "trainer": lambda t, g, o: build_trainer(t, o),
    "split": lambda t, g, o: build_split(t, o),
    "callbacks": lambda t, g, o: build_callbacks_option(t, o),
    "logger": lambda t, g, o: build_logger(t, o),
    "paths": lambda t, g, o: build_paths(t, o),
    "experiment": lambda t, g, o: build_experiment(t, o),
    "sweep": lambda t, g, o: build_sweep(t, o),
    "debug": lambda t, g, o: build_debug(t, o),
    "hydra/sweeper": build_hydra_sweeper,
    "hydra/sweeper/sampler": build_hydra_sweeper,
    "hydra/sweeper/pruner": build_hydra_sweeper,
}


def test_every_group_of_conf_has_a_builder_here() -> None:
    assert {group for group, _ in options()} == set(BUILDERS)


@pytest.mark.parametrize(("group", "option"), options(), ids=[f"{g}={o}" for g, o in options()])
def test_the_option_composes_and_its_objects_are_built(tmp_path: Path, group: str, option: str) -> None:
    BUILDERS[group](tmp_path, group, option)
