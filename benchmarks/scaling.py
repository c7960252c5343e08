"""How cost grows with work: time and peak memory of feature caching and of one training epoch at 1x, 2x, 4x."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hydra.utils import instantiate

from benchmarks.common import Record, corpus, in_fresh_process, timed
from benchmarks.training import compose_config, lightning_seconds
from emotion.data.datamodule import EmotionDataModule


def _datamodule(cache_dir: Path, n_speakers: int, n_sentences: int) -> EmotionDataModule:
    cfg = compose_config("cnn2d", "logmel", cache_dir, n_speakers, n_sentences)
    return instantiate(cfg.data, features=instantiate(cfg.features), cache_dir=cache_dir)


def cache_features(cache_dir: str, n_speakers: int, n_sentences: int) -> tuple[float, int]:
    """Seconds to read, split and featurise the corpus into an empty cache, and the clips it holds."""
    datamodule = _datamodule(Path(cache_dir), n_speakers, n_sentences)
    seconds, _ = timed(datamodule.setup)
    return seconds, len(datamodule.clips)


def train_one_epoch(cache_dir: str, n_speakers: int, n_sentences: int) -> tuple[float, int]:
    """Seconds of one training epoch of the 2D CNN over the (cached) corpus, and its training samples."""
    cfg = compose_config("cnn2d", "logmel", Path(cache_dir), n_speakers, n_sentences)
    datamodule = _datamodule(Path(cache_dir), n_speakers, n_sentences)
    datamodule.setup()
    return lightning_seconds(cfg, datamodule), len(datamodule.datasets["train"])


def baseline() -> float:
    """Nothing: the peak memory of a process that only imported the project (torch, Lightning, ...)."""
    import lightning.pytorch  # noqa: F401

    from emotion.data import datamodule  # noqa: F401

    return 0.0


def run(cache_dir: Path, n_speakers: int, n_sentences: int, scales: tuple[int, ...], machine: dict) -> list[Record]:
    """Each step in a fresh process (its own peak memory); `peer` is the 1x figure, so ratio = 1/growth."""
    _, base_mb = in_fresh_process(baseline)
    rows = []
    for scale in scales:
        speakers = n_speakers * scale
        corpus(cache_dir, speakers, n_sentences)  # the corpus itself is generated once, outside the timings
        features_dir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
        try:
            (features_dir / "synthetic").symlink_to(cache_dir.resolve() / "synthetic")  # the corpus, not its features
            (cache_s, clips), cache_mb = in_fresh_process(cache_features, str(features_dir), speakers, n_sentences)
            (epoch_s, samples), epoch_mb = in_fresh_process(train_one_epoch, str(features_dir), speakers, n_sentences)
        finally:
            shutil.rmtree(features_dir, ignore_errors=True)
        rows.append(
            {
                "scale": scale,
                "clips": clips,
                "train_samples": samples,
                "cache_s": cache_s,
                "cache_mb": cache_mb,
                "epoch_s": epoch_s,
                "epoch_mb": epoch_mb,
            }
        )
    first = rows[0]
    records = []
    for row in rows:
        parameters = {
            "scale": row["scale"],
            "clips": row["clips"],
            "train_samples": row["train_samples"],
            "work_ratio": round(row["clips"] / first["clips"], 3),
            "baseline_process_mb": round(base_mb, 1),
        }
        for what, key, unit in (
            ("feature caching time", "cache_s", "s"),
            ("feature caching peak memory", "cache_mb", "MiB"),
            ("one training epoch time", "epoch_s", "s"),
            ("one training epoch peak memory", "epoch_mb", "MiB"),
        ):
            records.append(
                Record(
                    f"scaling: {what} at {row['scale']}x vs 1x",
                    row[key],
                    first[key],
                    unit,
                    parameters=parameters,
                    machine=machine,
                    notes="peer is the 1x figure: ratio = 1/growth; compare with work_ratio",
                )
            )
    return records
