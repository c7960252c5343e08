"""The LightningDataModule: corpus -> manifest -> split -> augmentation -> cached features -> normalize -> loaders.

Augmentation touches the training partition only and happens after the split:
either as `copies` augmented copies of each training clip, cached like any
features, or `on_the_fly` (each epoch draws new waveform augmentations and the
features are computed per batch, on the training device). SpecAugment masks
are drawn per training batch. The report's protocol, augmenting every clip and
then splitting, needs `augment.before_split=true`; such runs are tagged leaky.

With the whole-utterance window policy (`features/window=utterance`, see
`emotion.data.windows`) the decoded clips stay in memory at full length:
training batches take a new random window of each clip every epoch, and
validation and test batches hold every window of each clip, with `segments`
saying which clip a window belongs to, so the model averages over them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from emotion.data.audio import MAX_DURATION
from emotion.data.augment import Augmentation
from emotion.data.cache import FeatureCache, FeatureTable
from emotion.data.corpora import EMOTIONS, EXTRA_EMOTIONS, BadFilePolicy, Clip, Manifest, read_corpora, read_corpus
from emotion.data.datasets import Batch, FeatureDataset, WaveformDataset, WindowedDataset, collate_windows
from emotion.data.features import FeatureSet
from emotion.data.frontend import AudioFrontEnd
from emotion.data.normalize import SpeakerNormalizer
from emotion.data.splits import PARTITIONS, SpeakerHoldOut, Split, Splitter, check_no_leakage
from emotion.data.synthetic import SyntheticCorpusConfig, generate_corpus
from emotion.errors import ConfigError

log = logging.getLogger(__name__)


class EmotionDataModule(pl.LightningDataModule):
    """Reads a corpus (or synthesises the embedded one), splits it, augments training data, serves features."""

    def __init__(
        self,
        features: FeatureSet,
        cache_dir: str | Path,
        name: str = "synthetic",
        root: str | None = None,
        reader: str = "crema_d",
        reader_options: dict[str, Any] | None = None,
        synthetic: dict[str, Any] | None = None,
        classes: Sequence[str] = EMOTIONS,
        split: Splitter | None = None,
        fold: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        on_bad_name: BadFilePolicy = "skip",
        on_bad_file: BadFilePolicy = "skip",
        min_duration: float = 0.25,
        max_duration: float = MAX_DURATION,
        augment: Augmentation | None = None,
        roots: dict[str, str | None] | None = None,
        normalize: SpeakerNormalizer | None = None,
    ) -> None:
        super().__init__()
        if roots is not None:  # data=mix: several corpora, a folder each
            missing = [corpus for corpus, folder in roots.items() if not folder]
            if missing or len(roots) < 2:
                corpus = missing[0] if missing else "NAME"
                raise ConfigError(f"data=mix needs a folder for each of two corpora or more: data.roots.{corpus}=PATH")
        elif root is None and synthetic is None:
            raise ConfigError(f"data={name} needs data.root: the folder that holds the corpus")
        unknown = [c for c in classes if c not in (*EMOTIONS, *EXTRA_EMOTIONS)]
        if unknown:
            raise ConfigError(
                f"unknown class(es) {unknown} in data.classes: choose from {[*EMOTIONS, *EXTRA_EMOTIONS]}"
            )
        self.features = features
        self.front_end = AudioFrontEnd(features, min_duration, max_duration)
        self.cache_dir = Path(cache_dir).expanduser()
        self.name = name
        self.root = root
        self.roots = dict(roots) if roots is not None else None
        self.reader = reader
        self.reader_options = dict(reader_options or {})
        self.synthetic = SyntheticCorpusConfig(**synthetic) if synthetic is not None else None
        self.classes = tuple(classes)
        self.splitter = split or SpeakerHoldOut()
        self.fold = fold
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.on_bad_name = on_bad_name
        self.on_bad_file = on_bad_file
        self.augmentation = augment or Augmentation()
        self.normalizer = normalize or SpeakerNormalizer(features.shapes())
        self.table: FeatureTable | None = None
        # normalize=speaker: the features before the stage (the non-adaptive twin's), other classes' clips (`pool`)
        self.unnormalized: FeatureTable | None = None
        self.pool: FeatureTable | None = None
        self.split: Split | None = None
        self.dropped_classes: dict[str, int] = {}
        self.bad_names = 0
        self.datasets: dict[str, Dataset] = {}
        self.waves: list[torch.Tensor] = []  # whole decoded clips, in the utterance policy only

    @property
    def leaky(self) -> bool:
        """True when augmented copies of one clip may sit in different partitions (the report's protocol)."""
        return self.augmentation.before_split and not self.splitter.speaker_independent

    def corpus_root(self) -> Path:
        """The corpus folder (or manifest file): the user's `root`, or the synthetic corpus generated into the cache.

        With several corpora, a name made of their folders: it keys their feature cache.
        """
        if self.roots is not None:
            return Path("+".join(str(Path(r).expanduser().resolve()) for _, r in sorted(self.roots.items())))
        if self.root is not None:
            return Path(self.root).expanduser()
        assert self.synthetic is not None
        return generate_corpus(self.synthetic, self.cache_dir)

    def read_manifest(self, classes: Sequence[str] | None = None) -> Manifest:
        """The clips of `classes` (default `data.classes`) of the corpus or corpora, with what was left out."""
        classes = classes or self.classes
        if self.roots is not None:
            return read_corpora(self.roots, self.on_bad_name, classes)
        return read_corpus(self.corpus_root(), self.reader, self.on_bad_name, classes, self.reader_options)

    def unlabelled_pool(self, cache: FeatureCache) -> FeatureTable | None:
        """Features of other classes' clips (SAVEE's surprise): only in their speakers' label-free statistics."""
        known = list(dict.fromkeys([*self.classes, *EMOTIONS, *EXTRA_EMOTIONS]))
        others = [clip for clip in self.read_manifest(known).clips if clip.emotion not in self.classes]
        return cache.table(others, "skip") if others else None

    def setup(self, stage: str | None = None) -> None:
        """Read, split, augment and featurise the corpus once; later calls reuse it."""
        if self.datasets:
            return
        root = self.corpus_root()
        manifest = self.read_manifest()
        self.dropped_classes, self.bad_names = manifest.dropped_classes, manifest.bad_names
        if self.features.window.whole_utterance:
            self._setup_utterances(manifest.clips)
            return
        if self.normalizer.adaptive and self.augmentation.mode == "on_the_fly" and self.augmentation.wave is not None:
            raise ConfigError("normalize=speaker normalises cached features: use augment.mode=copies")
        cache = FeatureCache(self.cache_dir, root, self.front_end)
        originals = cache.table(manifest.clips, self.on_bad_file)
        aug = self.augmentation
        if aug.before_split:  # the report's protocol: copies of every clip, then the split
            table = _concat(originals, cache.table(aug.copies_of(originals.clips), "skip", aug.wave))
            self.split = self.splitter.split(table.clips, self.fold)
        else:
            self.split = self.splitter.split(originals.clips, self.fold)
            train_clips = [originals.clips[i] for i in self.split.train]
            table = originals
            if aug.mode == "copies" and aug.copies:
                table = _concat(originals, cache.table(aug.copies_of(train_clips), "skip", aug.wave))
                first = len(originals.clips)
                self.split = Split(
                    self.split.train + list(range(first, len(table.clips))), self.split.val, self.split.test
                )
        if self.splitter.speaker_independent:
            check_no_leakage(table.clips, self.split)  # again, with the augmented copies
        self.table = table = self._normalized(table, cache)
        labels = torch.tensor([self.classes.index(c.emotion) for c in table.clips])
        for partition in PARTITIONS:
            rows = torch.tensor(self.split.partition(partition), dtype=torch.long)
            self.datasets[partition] = FeatureDataset({n: t[rows] for n, t in table.tensors.items()}, labels[rows])
        if aug.mode == "on_the_fly" and aug.wave is not None:
            self.datasets["train"] = self._waveform_dataset(self.split.train, labels)
        log.info("split %s: %s", self.splitter.name, self._sizes())

    def _normalized(self, table: FeatureTable, cache: FeatureCache) -> FeatureTable:
        """The table through the `normalize` stage, whose population statistics are fitted on the clean training clips
        first (the fallback of speakers with few clips). Each speaker's statistics come from their original clips."""
        self.normalizer.fit(self.clean_train_features(table))
        if not self.normalizer.adaptive:
            return table
        self.unnormalized, self.pool = table, self.unlabelled_pool(cache)
        pooled = _concat(table, self.pool) if self.pool is not None else table
        speakers = [clip.speaker for clip in pooled.clips]
        tensors, _ = self.normalizer(pooled.tensors, speakers, reference=[clip.copy == 0 for clip in pooled.clips])
        return replace(table, tensors={name: tensor[: len(table.clips)] for name, tensor in tensors.items()})

    def _waveform_dataset(self, rows: list[int], labels: torch.Tensor) -> WaveformDataset:
        assert self.table is not None and self.augmentation.wave is not None
        if self.features.whole_clip:
            raise ConfigError(f"features={self.features.name} summarises whole clips: use augment.mode=copies")
        waves = [self.front_end.clip(self.table.clips[i], "error") for i in rows]
        return WaveformDataset(waves, labels[rows], self.features.n_samples, self.augmentation.wave)

    def _setup_utterances(self, clips: list[Clip]) -> None:
        """The whole-utterance policy: decode every clip once, split, and serve random or covering windows."""
        if self.normalizer.adaptive:
            raise ConfigError("normalize=speaker normalises cached features: use features/window=crop")
        aug = self.augmentation
        if aug.before_split or (aug.mode == "copies" and aug.copies):
            raise ConfigError(
                "features/window=utterance draws new windows every epoch: use augment.mode=on_the_fly "
                "(cached copies, and the report's augment-then-split protocol, need features/window=crop)"
            )
        kept, self.waves, skipped = self.front_end.clips(clips, self.on_bad_file)
        self.table = FeatureTable(clips=kept, tensors={}, skipped=skipped)
        self.split = self.splitter.split(kept, self.fold)
        labels = torch.tensor([self.classes.index(c.emotion) for c in kept])
        n_samples = self.features.n_samples
        train = self.split.train
        self.datasets["train"] = WaveformDataset(
            [self.waves[i] for i in train], labels[train], n_samples, aug.wave, random_crop=True
        )
        for partition in ("val", "test"):
            rows = self.split.partition(partition)
            self.datasets[partition] = WindowedDataset([self.waves[i] for i in rows], labels[rows], self.front_end)
        log.info("split %s (whole utterances): %s", self.splitter.name, self._sizes())

    def _sizes(self) -> dict[str, int]:
        return {p: len(d) for p, d in self.datasets.items()}

    @property
    def clips(self) -> list[Clip]:
        """Every clip of the manifest after setup, augmented copies included (`copy` > 0)."""
        assert self.table is not None, "call setup() first"
        return self.table.clips

    def clean_train_features(self, table: FeatureTable | None = None) -> dict[str, torch.Tensor]:
        """Features of the training partition's original clips (every window of them, for whole utterances), as
        the model takes them (after the `normalize` stage), or of `table`.

        The basis of input standardisation.
        """
        table = table or self.table
        assert table is not None and self.split is not None, "call setup() first"
        if self.waves:
            windows = torch.cat([self.front_end.windows(self.waves[i]) for i in self.split.train])
            parts = [self.features(chunk) for chunk in windows.split(256)]
            return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        rows = torch.tensor([i for i in self.split.train if table.clips[i].copy == 0], dtype=torch.long)
        return {name: t[rows] for name, t in table.tensors.items()}

    def class_weights(self) -> list[float]:
        """Inverse-frequency weights of the training classes (scikit-learn's "balanced": mean 1 over them)."""
        from sklearn.utils.class_weight import compute_class_weight

        labels = self.datasets["train"].labels.numpy()
        present = np.unique(labels)
        weights = dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=labels), strict=True))
        return [float(weights.get(i, 1.0)) for i in range(len(self.classes))]  # a class absent from training: 1

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """On the training device: features of on-the-fly waveforms, and SpecAugment masks on training batches."""
        inputs, labels = batch
        if "waveform" in inputs:
            segments = inputs.get("segments")
            inputs = self.features(inputs["waveform"])
            if segments is not None:
                inputs["segments"] = segments
        if self.augmentation.spec is not None and self.trainer is not None and self.trainer.training:
            inputs = self.augmentation.spec(inputs)
        return inputs, labels

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test partition, for `Trainer.predict(module, datamodule=...)`."""
        return self._loader("test", shuffle=False)

    def _loader(self, partition: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[partition]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_windows if isinstance(dataset, WindowedDataset) else None,
        )


def _concat(first: FeatureTable, second: FeatureTable) -> FeatureTable:
    return FeatureTable(
        clips=first.clips + second.clips,
        tensors={n: torch.cat([first.tensors[n], second.tensors[n]]) for n in first.tensors},
        computed=first.computed + second.computed,
        cached=first.cached + second.cached,
        skipped=first.skipped + second.skipped,
    )
