"""Training throughput: our LightningModule + Trainer vs a hand-written PyTorch loop, same model, data, batch size."""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from benchmarks.common import Record
from emotion.config import CONFIG_DIR, register_resolvers
from emotion.data.datamodule import EmotionDataModule
from emotion.models.module import EmotionClassifier
from emotion.pipeline.build import build_module

#: (model, features) of each architecture of the report.
ARCHITECTURES = {"cnn1d": "mel_mean", "cnn2d": "logmel", "fusion": "logmel_mfcc"}


def compose_config(model: str, features: str, cache_dir: Path, n_speakers: int, n_sentences: int) -> DictConfig:
    register_resolvers()
    overrides = [
        f"model={model}",
        f"features={features}",
        f"paths.cache_dir={cache_dir}",
        "paths.output_dir=/tmp/unused",
        f"data.synthetic.n_speakers={n_speakers}",
        f"data.synthetic.n_sentences={n_sentences}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _module(cfg: DictConfig, datamodule: EmotionDataModule) -> EmotionClassifier:
    torch.manual_seed(cfg.seed)
    features = datamodule.features
    module = build_module(cfg, features)
    module.standardizer.fit(datamodule.clean_train_features())
    return module


class _StepTimer(pl.Callback):
    """Seconds from the start of batch `skip` to the end of the last batch (the first batches warm up)."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.end = skip, 0.0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == self.skip:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def lightning_seconds(cfg: DictConfig, datamodule: EmotionDataModule, batches: float = 1.0, skip: int = 0) -> float:
    """Seconds of training batches `skip` to `batches` (a count, or 1.0 for the whole epoch) with our Trainer setup."""
    timer = _StepTimer(skip)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=cfg.trainer.precision,
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(_module(cfg, datamodule), train_dataloaders=datamodule.train_dataloader())
    return timer.end - timer.start


def plain_seconds(cfg: DictConfig, datamodule: EmotionDataModule, batches: int, skip: int) -> float:
    """The loop a user would write: forward, loss, backward, step, in the same autocast as the Trainer's."""
    module = _module(cfg, datamodule)
    module.train()
    optimizer = module.configure_optimizers()
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    start = 0.0
    for index, (inputs, targets) in enumerate(itertools.islice(datamodule.train_dataloader(), batches)):
        if index == skip:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.loss(module(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def run(cache_dir: Path, n_speakers: int, n_sentences: int, batches: int, repeats: int, machine: dict) -> list[Record]:
    """Samples per second of each architecture, Lightning vs plain, median of `repeats` interleaved runs."""
    records = []
    skip = 2 if batches > 4 else 1
    for model, features in ARCHITECTURES.items():
        cfg = compose_config(model, features, cache_dir, n_speakers, n_sentences)
        datamodule: EmotionDataModule = instantiate(cfg.data, features=instantiate(cfg.features), cache_dir=cache_dir)
        datamodule.setup()
        samples = (batches - skip) * cfg.data.batch_size
        ours, peer = [], []
        for _ in range(repeats):  # interleaved, so a slow spell of the machine hits both
            ours.append(samples / lightning_seconds(cfg, datamodule, batches, skip))
            peer.append(samples / plain_seconds(cfg, datamodule, batches, skip))
        records.append(
            Record(
                f"training: {model}, Lightning vs plain loop",
                statistics.median(ours),
                statistics.median(peer),
                "samples/s",
                higher_is_better=True,
                parameters={
                    "features": features,
                    "batch_size": cfg.data.batch_size,
                    "timed_batches": batches - skip,
                    "repeats": repeats,
                    "precision": str(cfg.trainer.precision),
                    "lightning_runs": [round(x, 2) for x in ours],
                    "plain_runs": [round(x, 2) for x in peer],
                },
                machine=machine,
                notes="ratio = Lightning/plain throughput; overhead = 1 - ratio",
            )
        )
    return records
