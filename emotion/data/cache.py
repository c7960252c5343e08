"""An on-disk feature cache, keyed by corpus and feature parameters.

Features of a corpus live in one folder per (corpus root, feature parameters).
Each clip is identified by its path, size and modification time, so an edited
or replaced file is recomputed. Features are written in shards of a few hundred
clips, each written to a temporary file and renamed into place: a run that dies
while caching leaves no half-written shard, and the next run computes only the
clips that no shard holds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from emotion.data.augment import WaveAugment
from emotion.data.corpora import BadFilePolicy, Clip
from emotion.data.frontend import AudioFrontEnd, skipped_summary

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class FeatureTable:
    """Features of the clips that could be decoded, in manifest order, with what the cache did."""

    clips: list[Clip]
    tensors: dict[str, torch.Tensor]
    computed: int = 0
    cached: int = 0
    skipped: list[str] = field(default_factory=list)


def clip_key(path: str | Path) -> str:
    """Identity of a file's current contents: its absolute path, size and modification time.

    (`os.path.abspath`, not `Path.resolve`: resolving every link of every path took most of a warm read.)
    """
    stat = os.stat(path)
    return hashlib.sha1(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()


class FeatureCache:
    """Cached features of one front end's feature set for the clips of one corpus root."""

    def __init__(
        self,
        cache_dir: str | Path,
        corpus_root: str | Path,
        front_end: AudioFrontEnd,
        shard_size: int = 512,
        batch_size: int = 64,
    ) -> None:
        features = front_end.features
        corpus = hashlib.sha1(str(Path(corpus_root).resolve()).encode()).hexdigest()[:12]
        self.folder = Path(cache_dir).expanduser() / "features" / f"{corpus}-{features.name}-{features.key()}"
        self.front_end = front_end
        self.features = features
        self.shard_size = shard_size
        self.batch_size = batch_size

    def table(
        self, clips: Sequence[Clip], on_bad_file: BadFilePolicy = "skip", augment: WaveAugment | None = None
    ) -> FeatureTable:
        """Features of `clips`: read from the cache, computing and caching only those it lacks.

        Clips with `copy` > 0 are augmented copies: decoded, then passed through `augment`
        with a random stream fixed by (clip, copy), so a cached copy is the one a rerun would make.
        """
        if augment is None and any(c.copy for c in clips):
            raise ValueError("augmented copies need the augmentation that makes them")
        keys = [_item_key(c, augment) for c in clips]
        stored = self._read_shards()
        missing = [i for i, k in enumerate(keys) if k not in stored]
        skipped = self._compute(clips, keys, missing, stored, on_bad_file, augment)
        kept = [i for i, k in enumerate(keys) if k in stored]
        if kept:
            names = self.features.stored_names()
            tensors = self.features.view({name: torch.stack([stored[keys[i]][name] for i in kept]) for name in names})
        else:
            tensors = {name: torch.empty(0) for name in self.features.shapes()}
        if skipped:
            log.warning("%s", skipped_summary(skipped))
        return FeatureTable(
            clips=[clips[i] for i in kept],
            tensors=tensors,
            computed=len(missing) - len(skipped),
            cached=len(clips) - len(missing),
            skipped=list(skipped),
        )

    def _read_shards(self) -> dict[str, dict[str, torch.Tensor]]:
        stored: dict[str, dict[str, torch.Tensor]] = {}
        for shard in sorted(self.folder.glob("shard-*.pt")):
            data = torch.load(shard, weights_only=True, mmap=True)
            for row, key in enumerate(data["keys"]):
                stored[key] = {name: tensor[row] for name, tensor in data["tensors"].items()}
        return stored

    def _compute(
        self,
        clips: Sequence[Clip],
        keys: list[str],
        missing: list[int],
        stored: dict[str, dict[str, torch.Tensor]],
        on_bad_file: BadFilePolicy,
        augment: WaveAugment | None,
    ) -> dict[str, str]:
        """Compute and cache the features of the `missing` clips; returns those skipped, with why."""
        skipped: dict[str, str] = {}
        if not missing:
            return skipped
        batches = [batch for shard in _chunks(missing, self.shard_size) for batch in _chunks(shard, self.batch_size)]
        decoded = _prefetched(lambda batch: self._decode(clips, batch, on_bad_file, skipped, augment), batches)
        shard_keys: list[str] = []
        shard_tensors: list[dict[str, torch.Tensor]] = []
        bar = tqdm(total=len(missing), desc=f"Computing {self.features.name} features", unit="clip")
        with bar, _one_core_left_for_decoding(self.features.cheap_to_compute):
            for batch, (waves, good) in zip(batches, decoded, strict=True):
                if good:
                    shard_tensors.append(self.features.stored_of_clips(waves))
                    shard_keys += [keys[i] for i in good]
                bar.update(len(batch))
                if len(shard_keys) >= self.shard_size or (batch is batches[-1] and shard_keys):
                    merged = {n: torch.cat([t[n] for t in shard_tensors]) for n in shard_tensors[0]}
                    self._write_shard(shard_keys, merged)
                    for row, key in enumerate(shard_keys):
                        stored[key] = {name: tensor[row] for name, tensor in merged.items()}
                    shard_keys, shard_tensors = [], []
        return skipped

    def _decode(
        self,
        clips: Sequence[Clip],
        batch: list[int],
        on_bad_file: BadFilePolicy,
        skipped: dict[str, str],
        augment: WaveAugment | None,
    ) -> tuple[list[torch.Tensor], list[int]]:
        waves, good = [], []
        for i in batch:
            wave = self.front_end.clip(clips[i], on_bad_file, augment, skipped)
            if wave is None:
                continue
            waves.append(wave)
            good.append(i)
        return waves, good

    def _write_shard(self, keys: list[str], tensors: dict[str, torch.Tensor]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}.pt"
        partial = self.folder / f".{name}.partial"
        torch.save({"keys": keys, "tensors": {n: t.contiguous() for n, t in tensors.items()}}, partial)
        os.replace(partial, self.folder / name)


def _item_key(clip: Clip, augment: WaveAugment | None) -> str:
    if not clip.copy:
        return clip_key(clip.path)
    assert augment is not None
    return hashlib.sha1(f"{clip_key(clip.path)}:{augment.key()}:{clip.copy}".encode()).hexdigest()


@contextmanager
def _one_core_left_for_decoding(cheap_to_compute: bool) -> Iterator[None]:
    """Torch computes on one thread fewer while the decoding thread runs (faster overall: docs/performance.md).

    Not for features whose computing dwarfs decoding (an SSL upstream, which a thread fewer slows down).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1) if cheap_to_compute else threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _prefetched(work: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """`work(item)` for each item in order, the next one running in a thread while the caller uses this one.

    Decoding (libsndfile, which releases the GIL) then overlaps with the feature computation.
    """
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(work, items[0])
        for item in items[1:]:
            current, ahead = ahead.result(), pool.submit(work, item)
            yield current
        yield ahead.result()


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
