"""What a trial on cached features costs: a whole leave-one-speaker-out cross-validation through the pipeline
(as a sweep's trial runs it, in-process: MLflow runs, confusion matrices, skops checkpoints) against the
scikit-learn script a user would write on the same cached arrays (the same per-speaker standardisation, the same
nested selection, the same heads), both in one process, the cache warm.

python -m benchmarks.trial_cost --data ../shared/data/savee --encoder ../shared/models/whisper-base
python -m benchmarks.trial_cost --data ../shared/data/savee --encoder ../shared/models/whisper-base --model heads

The ratio printed is ours / the script's (the goal: at most 3). Both must give the same pooled UAR.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import machine, timed
from emotion.config import CONFIG_DIR, register_resolvers
from emotion.data.cache import FeatureCache
from emotion.data.corpora import read_corpus
from emotion.data.frontend import AudioFrontEnd
from emotion.metrics import unweighted_average_recall
from emotion.models.estimator import LayerView
from emotion.pipeline import train
from emotion.pipeline.estimator import pipeline_key, selection_metric


def config(data: Path, encoder: Path, model: str, cache_dir: Path, folder: Path):
    """The trial's config: the speaker-adaptive Whisper-base recipe on SAVEE, leave one speaker out."""
    register_resolvers()
    overrides = [
        "experiment=whisper_base_adaptive",
        f"model={model}",
        f"features.encoder={encoder}",
        "data=savee",
        f"data.root={data}",
        "split=loso",
        f"paths.cache_dir={cache_dir}",
        f"paths.output_dir={folder / 'outputs'}",
        f"logger.tracking_uri=sqlite:///{folder / 'mlruns.db'}",
        f"logger.artifact_location={folder / 'mlartifacts'}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides)


def cached_arrays(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cached features (clips, layers, width) of the corpus, its labels and speakers: what the script reads."""
    features = instantiate(cfg.features)
    clips = read_corpus(cfg.data.root, cfg.data.reader, classes=list(cfg.data.classes)).clips
    table = FeatureCache(cfg.paths.cache_dir, cfg.data.root, AudioFrontEnd(features)).table(clips)
    labels = np.array([list(cfg.data.classes).index(c.emotion) for c in table.clips])
    return table.tensors["ssl"].numpy(), labels, np.array([c.speaker for c in table.clips])


def per_speaker_standardised(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Each speaker's clips standardised by their own mean and std (per layer and dimension)."""
    out = np.empty_like(x)
    for speaker in np.unique(speakers):
        own = speakers == speaker
        out[own] = (x[own] - x[own].mean(axis=0)) / np.maximum(x[own].std(axis=0, ddof=1), 1e-5)
    return out


def script(cfg, x: np.ndarray, labels: np.ndarray, speakers: np.ndarray) -> float:
    """The user's own script: LOSO, per-speaker standardisation, the same grid chosen by inner LOSO; pooled UAR."""
    spec = instantiate(cfg.model, classes=list(cfg.data.classes), input_shapes={"ssl": x.shape[1:]}, _convert_="all")
    rows = per_speaker_standardised(x, speakers).reshape(len(x), -1)
    predicted = np.empty_like(labels)
    for test in np.unique(speakers):
        held = speakers == test
        steps = [
            ("layers", LayerView(spec.layers, x.shape[1])),
            ("scale", StandardScaler()),
            ("estimator", clone(spec.estimator)),
        ]
        grids = [{pipeline_key(k): v for k, v in grid.items()} for grid in spec.grids]
        search = GridSearchCV(Pipeline(steps), grids, scoring=selection_metric("val/uar"), cv=LeaveOneGroupOut())
        search.fit(rows[~held], labels[~held], groups=speakers[~held])
        predicted[held] = search.predict(rows[held])
    return unweighted_average_recall(labels, predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the SAVEE folder")
    parser.add_argument("--encoder", type=Path, required=True, help="the whisper-base folder")
    parser.add_argument("--model", default="svm", help="the head (conf/model/): svm, logreg, heads")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("EMOTION_CACHE_DIR", "~/.cache/emotion")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cfg = config(args.data.resolve(), args.encoder.resolve(), args.model, args.cache_dir.expanduser(), Path(folder))
        train(cfg)  # warms the cache (the encoder runs here if it must) and every import
        x, labels, speakers = cached_arrays(cfg)
        peer_s, peer_uar = timed(lambda: script(cfg, x, labels, speakers))
        cfg = config(args.data.resolve(), args.encoder.resolve(), args.model, args.cache_dir.expanduser(), Path(folder))
        ours_s, summary = timed(lambda: train(cfg))
    record = {
        "name": f"warm-cache LOSO trial on SAVEE, model={args.model}: the pipeline vs a scikit-learn script",
        "ours_s": round(ours_s, 2),
        "script_s": round(peer_s, 2),
        "ratio": round(ours_s / peer_s, 2),
        "ours_pooled_uar": round(summary["test/uar_pooled"], 4),
        "script_pooled_uar": round(peer_uar, 4),
        "machine": machine(),
    }
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
