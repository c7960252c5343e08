"""Sweep cost: the same study (search space, sampler seed, trial budget) with the median pruner and without."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

from benchmarks.common import Record

#: The pruner config of each arm (conf/hydra/sweeper/pruner/).
ARMS = ("median", "none")


def run_sweep(
    folder: Path, cache_dir: Path, pruner: str, trials: int, epochs: int, corpus: tuple[int, int]
) -> tuple[float, optuna.Study]:
    """`emotion-train --multirun sweep=cnn1d_mel_mean` as a user runs it; wall seconds and the finished study."""
    sweep_dir = folder / pruner
    command = [
        sys.executable,
        "-m",
        "emotion.cli.train",
        "--multirun",
        "sweep=cnn1d_mel_mean",
        f"hydra/sweeper/pruner={pruner}",
        *(["hydra.sweeper.pruner.n_startup_trials=2"] if pruner == "median" else []),  # as measured
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweep.dir={sweep_dir}",
        f"trainer.max_epochs={epochs}",
        "+trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"data.synthetic.n_speakers={corpus[0]}",
        f"data.synthetic.n_sentences={corpus[1]}",
    ]
    env = {**os.environ, "EMOTION_CACHE_DIR": str(cache_dir), "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlruns.db"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"sweep with pruner={pruner} failed:\n{result.stderr[-3000:]}")
    study = optuna.load_study(study_name="cnn1d_mel_mean", storage=f"sqlite:///{sweep_dir}/optuna.db")
    return seconds, study


def epochs_trained(study: optuna.Study) -> int:
    """Epochs the study's trials trained: each reports its val/uar once per epoch."""
    return sum(len(t.intermediate_values) for t in study.trials)


def run(
    folder: Path, cache_dir: Path, trials: int, epochs: int, corpus: tuple[int, int], machine: dict
) -> list[Record]:
    """Epochs, wall time and best val/uar of the pruned sweep against the unpruned one."""
    results = {arm: run_sweep(folder, cache_dir, arm, trials, epochs, corpus) for arm in ARMS}
    (pruned_s, pruned), (full_s, full) = results["median"], results["none"]
    states = {
        arm: {s.name: sum(t.state == s for t in st.trials) for s in optuna.trial.TrialState}
        for arm, (_, st) in results.items()
    }
    parameters = {
        "sweep": "cnn1d_mel_mean",
        "trials": trials,
        "max_epochs": epochs,
        "clips": corpus[0] * corpus[1] * 6,
        "sampler": "TPE, seed 123",
        "pruner": "MedianPruner(n_startup_trials=2, n_warmup_steps=1)",
        "best_val_uar_pruned": round(pruned.best_value, 4),
        "best_val_uar_unpruned": round(full.best_value, 4),
        "best_val_uar_gap_points": round(100 * (full.best_value - pruned.best_value), 2),
        "trial_states": {arm: {k: v for k, v in counts.items() if v} for arm, counts in states.items()},
    }
    common = {"parameters": parameters, "machine": machine}
    return [
        Record(
            "sweep: epochs trained, median pruner vs none",
            epochs_trained(pruned),
            epochs_trained(full),
            "epochs",
            **common,
        ),
        Record("sweep: wall time, median pruner vs none", pruned_s, full_s, "s", **common),
        Record(
            "sweep: best val/uar, median pruner vs none",
            pruned.best_value,
            full.best_value,
            "val/uar",
            higher_is_better=True,
            **common,
        ),
    ]
