"""How many clips of a new speaker a speaker-adaptive model needs: UAR against k, through `emotion-predict`.

Each fold model of a leave-one-speaker-out cross-validation (a run of `normalize=speaker`) predicts its own
held-out speaker's clips with `emotion-predict --manifest`: the clips are shuffled and cut into groups of about k
(`numpy.array_split`: k to 2k-1 clips each), each group named as a speaker of its own, so each clip is normalised
by the statistics of its group alone (`--min-clips k`). k=0: no speaker given, the training population's
statistics. Draws reshuffle; the figure per k is the pooled UAR over every fold's clips, mean and range over
draws.

python -m benchmarks.speaker_clips --cv-run RUN_ID --tracking-uri sqlite:///mlruns.db --data ../shared/data/savee
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from benchmarks.common import machine
from emotion.cli import predict
from emotion.data.corpora import read_corpus
from emotion.metrics import unweighted_average_recall

KS = (0, 3, 5, 10, 20, "all")


def fold_runs(client: mlflow.MlflowClient, cv_run: str) -> list[mlflow.entities.Run]:
    """The fold runs of a cross-validation's parent run, in fold order."""
    parent = client.get_run(cv_run)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{cv_run}'")
    return sorted(children, key=lambda run: int(run.data.tags["fold"]))


def groups(count: int, k: int | str, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices 0..count-1 shuffled and cut into groups of about k (one group for `all`)."""
    order = rng.permutation(count)
    if k == "all":
        return [order]
    return np.array_split(order, max(1, count // int(k)))


def predicted_uar(
    tracking_uri: str, runs: list[mlflow.entities.Run], clips_of: dict, k: int | str, draw: int, folder: Path
) -> float:
    """The pooled UAR of every fold's held-out clips, each group of about k normalised by its own statistics."""
    rng = np.random.default_rng(draw)
    truths, guesses = [], []
    for run in runs:
        speaker = run.data.params["split.test_speakers"]
        clips = clips_of[speaker]
        manifest = folder / f"{speaker}-{k}-{draw}.csv"
        with manifest.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "speaker"])
            for number, group in enumerate(groups(len(clips), k, rng) if k else [np.arange(len(clips))]):
                writer.writerows([Path(clips[i].path).resolve(), f"{speaker}-{number}" if k else ""] for i in group)
        output = folder / f"{manifest.stem}.out.csv"
        minimum = ["--min-clips", str(max(2, int(k)))] if k and k != "all" else []
        predict.main(["--tracking-uri", tracking_uri, "--model", f"runs:/{run.info.run_id}", "--manifest",
                      str(manifest), "--format", "csv", "-o", str(output), *minimum])  # fmt: skip
        predicted = pd.read_csv(output)
        truth = {str(Path(clip.path).resolve()): clip.emotion for clip in clips}
        truths += [truth[path] for path in predicted["file"]]
        guesses += predicted["emotion"].tolist()
    classes = sorted(set(truths))
    return unweighted_average_recall(
        np.array([classes.index(t) for t in truths]),
        np.array([classes.index(g) if g in classes else -1 for g in guesses]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv-run", required=True, help="the parent run of a normalize=speaker cross-validation")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--data", type=Path, required=True, help="the corpus folder the cross-validation read")
    parser.add_argument("--reader", default="savee")
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args()
    client = mlflow.MlflowClient(args.tracking_uri)
    runs = fold_runs(client, args.cv_run)
    clips_of: dict[str, list] = {}
    for clip in read_corpus(args.data, args.reader).clips:
        clips_of.setdefault(clip.speaker, []).append(clip)
    curve = {}
    with tempfile.TemporaryDirectory() as folder:
        for k in KS:
            draws = 1 if k in (0, "all") else args.draws
            values = [predicted_uar(args.tracking_uri, runs, clips_of, k, d, Path(folder)) for d in range(draws)]
            curve[str(k)] = {"mean": round(float(np.mean(values)), 4), "min": round(min(values), 4),
                             "max": round(max(values), 4), "draws": draws}  # fmt: skip
            print(f"k={k}: pooled UAR {curve[str(k)]}", flush=True)
    print(json.dumps({"cv_run": args.cv_run, "curve": curve, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
