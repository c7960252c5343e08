"""The datasets the datamodule serves: cached feature rows, augmented waveforms cut to one window, and the
windows covering whole clips (with `collate_windows`, which says which clip each window belongs to)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion.data.audio import fit_length
from emotion.data.augment import WaveAugment
from emotion.data.frontend import AudioFrontEnd
from emotion.data.windows import random_window, stack_windows

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


class FeatureDataset(Dataset):
    """Rows of precomputed feature tensors with their class indices."""

    def __init__(self, tensors: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        self.tensors = tensors
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}, self.labels[index]


class WaveformDataset(Dataset):
    """Decoded training clips, augmented afresh at every read (if `augment`) and cut to one window.

    The window is the centre one (`random_crop=False`, the crop policy) or a new random one at every read.
    """

    def __init__(
        self,
        waves: list[torch.Tensor],
        labels: torch.Tensor,
        n_samples: int,
        augment: WaveAugment | None = None,
        random_crop: bool = False,
    ) -> None:
        self.waves = waves
        self.labels = labels
        self.augment = augment
        self.n_samples = n_samples
        self.random_crop = random_crop

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        wave = self.waves[index]
        if self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(2**62, ())))  # follows seed_everything, in workers too
            wave = self.augment(wave, rng)
        wave = random_window(wave, self.n_samples) if self.random_crop else fit_length(wave, self.n_samples)
        return {"waveform": wave}, self.labels[index]


class WindowedDataset(Dataset):
    """Whole clips as the windows that cover them, for evaluation; `collate_windows` batches them."""

    def __init__(self, waves: list[torch.Tensor], labels: torch.Tensor, front_end: AudioFrontEnd) -> None:
        self.waves = waves
        self.labels = labels
        self.front_end = front_end

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.front_end.windows(self.waves[index]), self.labels[index]


def collate_windows(items: list[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
    """Every window of the batch's clips in one tensor, `segments[i]` the batch position of window i's clip."""
    waveforms, segments = stack_windows([w for w, _ in items])
    return {"waveform": waveforms, "segments": segments}, torch.stack([label for _, label in items])
