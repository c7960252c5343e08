"""Shared fixtures: a tiny synthetic corpus, real MLflow stores and composed Hydra configs in temporary folders."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub reads it: no test reaches the hub
import tempfile

# Speaker profiles of servers and commands started outside a test's own fixture go to a temporary folder too
# (each test has its own store: `speaker_profiles`).
os.environ["EMOTION_PROFILES"] = f"sqlite:///{tempfile.mkdtemp(prefix='emotion-profiles-')}/profiles.db"
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from emotion.config import CONFIG_DIR, PROFILES_VARIABLE, register_resolvers
from emotion.data.synthetic import SyntheticCorpusConfig, generate_corpus
from emotion.ops.team import venv_environment, wait_until_answering

register_resolvers()

#: Fixtures of the promotion, pyfunc and serving tests: a store of trained runs, and its champion.
pytest_plugins = ["tests.stores"]

#: A corpus small enough for tests: 6 speakers x 2 sentences x 6 emotions = 72 clips.
TINY_CORPUS = {"n_speakers": 6, "n_sentences": 2}
#: Train a handful of batches only.
FEW_BATCHES = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "+trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "logger.log_model=false",  # the promotion logs it; tests of runs:/ID/model turn it back on
]


#: The modules that run longest, collected first. (`make test`'s xdist `loadfile` runs files with the most tests first
#: instead: measured on a fresh clone, that balanced its two workers better than this order, 23:30 against 26:03.)
LONGEST_FIRST = (
    "test_workers.py",
    "test_readme.py",
    "test_readme_speakers.py",
    "test_benchmarks.py",
    "test_extending.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def speaker_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own speaker profiles store, under its tmp folder (never the user's cache)."""
    store = tmp_path / "profiles.db"
    monkeypatch.setenv(PROFILES_VARIABLE, f"sqlite:///{store}")
    return store


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole session, so the tiny corpus is synthesised once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_corpus(cache_dir: Path) -> Path:
    return generate_corpus(SyntheticCorpusConfig(**TINY_CORPUS), cache_dir, workers=1)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A real MLflow SQLite store of the test's own."""
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


def compose_config(
    *overrides: str,
    cache_dir: Path,
    output_dir: Path,
    tracking_uri: str,
    artifact_location: Path,
    corpus: dict | None = None,
) -> DictConfig:
    """The app's config with test paths, a real MLflow store, a tiny corpus (unless `corpus`) and `overrides`."""
    base = [
        f"paths.cache_dir={cache_dir}",
        f"paths.output_dir={output_dir}",
        f"logger.tracking_uri={tracking_uri}",
        f"logger.artifact_location={artifact_location}",
        *(f"data.synthetic.{k}={v}" for k, v in (TINY_CORPUS if corpus is None else corpus).items()),
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*base, *overrides])


@pytest.fixture
def make_config(tmp_path: Path, cache_dir: Path, tracking_uri: str):
    """Compose the app's config with test paths, a tiny corpus and `overrides`; `cache` replaces the shared cache."""

    def make(*overrides: str, corpus: dict | None = None, cache: Path | None = None) -> DictConfig:
        return compose_config(
            *overrides,
            cache_dir=cache or cache_dir,
            output_dir=tmp_path / "outputs",
            tracking_uri=tracking_uri,
            artifact_location=tmp_path / "mlartifacts",
            corpus=corpus,
        )

    return make


def finished_runs(tracking_uri: str, experiment: str = "emotion") -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {tracking_uri}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(command: list[str], port: int, probe: str, log: Path, **popen: Any) -> Iterator[str]:
    """Start `command` (a server on 127.0.0.1:`port`), wait until `probe` answers, yield its URL, then stop it.

    Its output goes to `log` (a pipe nobody reads could fill up and stall the server), shown if it dies.
    """
    url = f"http://127.0.0.1:{port}"
    env = venv_environment(popen.pop("env", None))
    with log.open("w") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=output, start_new_session=True, **popen)
        try:
            wait_until_answering(f"{url}{probe}", server, log)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
