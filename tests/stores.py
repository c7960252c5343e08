"""A real SQLite tracking store with real trained runs, shared by the promotion, pyfunc and serving tests.

The modules that serve the store's champion share one store (`store` is session-scoped); the promotion tests,
which score and promote runs, override it with a store of their own.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from omegaconf import DictConfig

from emotion.cli import promote
from emotion.pipeline import train
from tests.conftest import FEW_BATCHES, compose_config

TINY_MODEL = ["model.net.channels=[8,8,8]", "model.net.dense=16"]


class Store:
    """A tracking store with real trained runs, and the configs they were trained with."""

    def __init__(self, folder: Path, cache_dir: Path, model: tuple[str, ...] = tuple(TINY_MODEL)) -> None:
        self.folder, self.cache_dir, self.model = folder, cache_dir, model
        self.uri = f"sqlite:///{folder / 'mlruns.db'}"
        self.client = mlflow.MlflowClient(self.uri)
        self.configs: dict[str, DictConfig] = {}

    def config(self, *overrides: str) -> DictConfig:
        return compose_config(
            *FEW_BATCHES,
            *self.model,
            *overrides,
            cache_dir=self.cache_dir,
            output_dir=self.folder / "outputs" / str(len(self.configs)),
            tracking_uri=self.uri,
            artifact_location=self.folder / "mlartifacts",
        )

    def train(self, name: str, *overrides: str) -> str:
        """Train a run named `name`; returns its run ID."""
        cfg = self.config(f"logger.run_name={name}", *overrides)
        train(cfg)
        (run,) = self.client.search_runs(
            [self.client.get_experiment_by_name("emotion").experiment_id], f"attributes.run_name = '{name}'"
        )
        self.configs[run.info.run_id] = cfg
        return run.info.run_id

    def score(self, run_id: str, value: float) -> None:
        """Give a run a known `val/uar_best` (its kept checkpoint's value: what runs are ranked by)."""
        self.client.log_metric(run_id, "val/uar_best", value, step=10_000)

    def promote(self, *args: str) -> None:
        promote.main(["--tracking-uri", self.uri, *args])


def trained_store(folder: Path, cache_dir: Path) -> Store:
    """Three trained runs (a, b, c) and runs that must never win: failed, pruned, a study's parent."""
    store = Store(folder, cache_dir)
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        store.train(name, f"seed={seed}")
    experiment_id = store.client.get_experiment_by_name("emotion").experiment_id
    for name, status, tags in (
        ("crashed", "FAILED", {}),
        ("pruned", "FINISHED", {"trial_state": "PRUNED", "study": "s"}),
        ("study s", "FINISHED", {"role": "study", "study": "s"}),
        ("a loso fold02", "FINISHED", {"fold": "2", "cv": "loso"}),  # trained on a subset of the speakers
    ):
        run = store.client.create_run(experiment_id, run_name=name, tags=tags)
        store.client.log_metric(run.info.run_id, "val/uar_best", 0.99)
        store.client.set_terminated(run.info.run_id, status)
    return store


def run_id_of(store: Store, name: str) -> str:
    return next(i for i, c in store.configs.items() if c.logger.run_name == name)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Store:
    """One store for the modules that serve its champion and add nothing that competes with it (pyfunc, serving,
    recognizer); a module whose tests score and promote runs overrides it with a store of its own."""
    return trained_store(tmp_path_factory.mktemp("registry"), cache_dir)


@pytest.fixture(scope="session")
def champion(store: Store) -> tuple[str, str]:
    """(model URI, run ID) of a registered champion of its own."""
    store.score(run_id_of(store, "b"), 0.90)
    promote.main(["--tracking-uri", store.uri, "--name", "served"])
    return "models:/served@champion", run_id_of(store, "b")
