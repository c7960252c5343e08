"""The LightningDataModule: corpus -> manifest -> split -> cached features -> loaders."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from emotion.data.cache import FeatureCache, FeatureTable
from emotion.data.corpora import EMOTIONS, BadFilePolicy, Clip, read_crema_d
from emotion.data.features import FeatureSet
from emotion.data.splits import PARTITIONS, Split, split_manifest
from emotion.data.synthetic import SyntheticCorpusConfig, generate_corpus
from emotion.errors import ConfigError

log = logging.getLogger(__name__)

READERS = {"crema_d": read_crema_d}


class FeatureDataset(Dataset):
    """Rows of precomputed feature tensors with their class indices."""

    def __init__(self, tensors: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        self.tensors = tensors
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}, self.labels[index]


class EmotionDataModule(pl.LightningDataModule):
    """Reads a corpus (or synthesises the embedded one), splits it and serves cached features."""

    def __init__(
        self,
        features: FeatureSet,
        cache_dir: str | Path,
        name: str = "synthetic",
        root: str | None = None,
        reader: str = "crema_d",
        synthetic: dict[str, Any] | None = None,
        classes: Sequence[str] = EMOTIONS,
        split: dict[str, Any] | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        on_bad_name: BadFilePolicy = "skip",
        on_bad_file: BadFilePolicy = "skip",
    ) -> None:
        super().__init__()
        if root is None and synthetic is None:
            raise ConfigError(f"data={name} needs data.root: the folder that holds the corpus")
        if reader not in READERS:
            raise ConfigError(f"unknown reader {reader!r}: choose one of {sorted(READERS)}")
        self.features = features
        self.cache_dir = Path(cache_dir).expanduser()
        self.name = name
        self.root = root
        self.reader = reader
        self.synthetic = SyntheticCorpusConfig(**synthetic) if synthetic is not None else None
        self.classes = tuple(classes)
        self.split_options = dict(split or {})
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.on_bad_name = on_bad_name
        self.on_bad_file = on_bad_file
        self.table: FeatureTable | None = None
        self.split: Split | None = None
        self.datasets: dict[str, FeatureDataset] = {}

    def corpus_root(self) -> Path:
        """The corpus folder: the user's `root`, or the synthetic corpus generated into the cache."""
        if self.root is not None:
            return Path(self.root).expanduser()
        assert self.synthetic is not None
        return generate_corpus(self.synthetic, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Read, split and featurise the corpus once; later calls reuse it."""
        if self.datasets:
            return
        root = self.corpus_root()
        clips = READERS[self.reader](root, on_bad_name=self.on_bad_name, classes=self.classes)
        self.table = FeatureCache(self.cache_dir, root, self.features).table(clips, self.on_bad_file)
        self.split = split_manifest(self.table.clips, **self.split_options)
        labels = torch.tensor([self.classes.index(c.emotion) for c in self.table.clips])
        for partition in PARTITIONS:
            rows = torch.tensor(self.split.partition(partition), dtype=torch.long)
            tensors = {name: t[rows] for name, t in self.table.tensors.items()}
            self.datasets[partition] = FeatureDataset(tensors, labels[rows])
        log.info(
            "split %s: %s", self.split_options.get("strategy", "speaker"), {p: len(d) for p, d in self.datasets.items()}
        )

    @property
    def clips(self) -> list[Clip]:
        assert self.table is not None, "call setup() first"
        return self.table.clips

    def class_weights(self) -> list[float]:
        """Inverse-frequency weights of the training classes (mean 1)."""
        labels = self.datasets["train"].labels.tolist()
        counts = Counter(labels)
        return [len(labels) / (len(self.classes) * counts.get(i, 1)) for i in range(len(self.classes))]

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _loader(self, partition: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[partition],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
