"""Reading a finished study: the analysis notebook runs end to end, and the MLflow UI shows it in a real browser."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import nbformat
import pytest
from nbclient import NotebookClient

from emotion.cli import promote
from tests.conftest import free_port, running_server
from tests.test_sweep import run_sweep

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "study_report.ipynb"
STUDY = "reading"
CHROMIUM = os.environ.get("EMOTION_CHROMIUM", "/usr/bin/chromium")
#: The probe's flags: headless, as root, and no background connections on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A folder holding a 3-trial study (multirun/reading/optuna.db), its MLflow store, and a champion."""
    folder = tmp_path_factory.mktemp("study")
    run_sweep(
        folder,
        cache_dir,
        "sweep=cnn2d_logmel",
        f"hydra.sweeper.study_name={STUDY}",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=1",
    )
    promote.main(["--tracking-uri", f"sqlite:///{folder}/mlruns.db", "--study", STUDY])
    return folder


def test_the_study_report_notebook_runs_end_to_end(finished_study: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{finished_study}/mlruns.db")
    monkeypatch.setenv("EMOTION_STUDY", STUDY)
    monkeypatch.setenv("EMOTION_STUDY_STORAGE", f"sqlite:///{finished_study}/multirun/{STUDY}/optuna.db")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit it stripped"

    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(finished_study)}}
    ).execute()  # fails on any cell error

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    competing = re.search(r"(\d+) competing runs", text)
    assert competing and int(competing[1]) >= 1
    assert "report acc" in text and "0.82" in text  # the report's table beside ours
    assert "chosen by val/uar_best" in text and "its test acc" in text  # chosen by validation, not by test
    assert "emotion@champion: version 1" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # confusion matrix, per-class F1, learning curves, Optuna's plots
    assert "cnn2d-logmel-synthetic t0" in text  # the leaderboard names the trials


def chromium_or_skip() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium package (.ci/run does)")
    return CHROMIUM


@pytest.fixture
def mlflow_ui(finished_study: Path, tmp_path: Path) -> Iterator[str]:
    """`mlflow ui` on 127.0.0.1 over the study's store; yields its URL."""
    port = free_port()
    store = f"sqlite:///{finished_study}/mlruns.db"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1"]
    with running_server(
        [*command, "--port", str(port)], port, "/health", tmp_path / "ui.log", cwd=finished_study
    ) as url:
        yield url


def test_the_mlflow_ui_shows_the_study_and_a_trials_confusion_matrix(finished_study: Path, mlflow_ui: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_or_skip()
    client = mlflow.MlflowClient(f"sqlite:///{finished_study}/mlruns.db")
    experiment = client.get_experiment_by_name("emotion")
    (child,) = client.search_runs([experiment.experiment_id], f"tags.study = '{STUDY}' and tags.trial_number = '0'")
    screenshots = ROOT / "tests" / "screenshots"  # kept for people to look at (git ignores them)
    screenshots.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs")
        parent = page.get_by_role("gridcell", name=re.compile(f"study {STUDY}"))
        expect(parent).to_be_visible(timeout=60_000)
        parent.get_by_role("button").first.click()  # the study's row opens onto its trials
        for number in range(3):
            expect(page.get_by_text(f"cnn2d-logmel-synthetic t{number:02d}")).to_be_visible(timeout=30_000)
        page.screenshot(path=screenshots / "experiment_runs.png", full_page=True)

        page.goto(
            f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs/{child.info.run_id}"
            "/artifacts/confusion_matrix.png"
        )
        image = page.locator("img[src^='blob:']").first  # the UI fetches the artifact and shows it as a blob
        expect(image).to_be_visible(timeout=60_000)
        expect(page.get_by_text("confusion_matrix.png").first).to_be_visible()
        assert image.evaluate("img => img.naturalWidth") > 500  # the picture itself loaded, not a broken link
        page.screenshot(path=screenshots / "confusion_matrix_artifact.png", full_page=True)
        browser.close()
