"""The recipe at CREMA-D's scale: 91 speakers, about 6,500 clips of 1.5 to 3 s, five speaker folds, cut input.

The corpus is the embedded synthetic one with CREMA-D's speaker count (91 speakers x 12 sentences x 6 emotions),
synthesised first and not timed. Then one `emotion-train` command, timed whole: Whisper base encodes every clip
once into the cache (`features.whisper_input=cut`), and the speaker-adaptive recipe (`model=heads`, its
non-adaptive twin, each selected in 5 inner speaker folds, candidates in parallel) is cross-validated in 5
speaker folds (`split=kfold`). The goal: under 30 minutes on 2 cores.

python -m benchmarks.many_speakers --encoder ../shared/models/whisper-base --workdir /tmp/many-speakers
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from pathlib import Path

import mlflow

from benchmarks.common import machine
from emotion.data.synthetic import SyntheticCorpusConfig, generate_corpus

SPEAKERS = 91
RESULTS = Path(__file__).with_suffix(".json")


def command(encoder: Path, workdir: Path) -> list[str]:
    """The timed `emotion-train` command."""
    return [
        "emotion-train",
        "experiment=whisper_base_adaptive",
        f"features.encoder={encoder.resolve()}",
        "features.whisper_input=cut",
        f"data.synthetic.n_speakers={SPEAKERS}",
        "split=kfold",
        f"paths.cache_dir={workdir / 'cache'}",
        f"logger.tracking_uri=sqlite:///{workdir / 'mlruns.db'}",
        "logger.experiment_name=many-speakers",
        "+trainer.enable_progress_bar=false",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, required=True, help="the Whisper base folder")
    parser.add_argument("--workdir", type=Path, required=True, help="corpus, cache, MLflow store and log")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = generate_corpus(SyntheticCorpusConfig(n_speakers=SPEAKERS), workdir / "cache")
    cmd = command(args.encoder, workdir)
    print("$", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    with (workdir / "train.log").open("w") as log:
        subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - start
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("many-speakers")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.role = 'cv'", max_results=1)
    folds = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    result = {
        "corpus": f"synthetic, {SPEAKERS} speakers, {sum(1 for _ in corpus.glob('*.wav'))} clips",
        "command": shlex.join([*cmd[:2], "features.encoder=.../whisper-base", *cmd[3:6]]),
        "wall_s": round(wall, 1),
        "folds": len(folds),
        "test/uar_pooled": round(parent.data.metrics["test/uar_pooled"], 4),
        "selected": sorted({run.data.params.get("selected", "") for run in folds}),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
