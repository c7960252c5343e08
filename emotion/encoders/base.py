"""The interface every frozen pretrained speech encoder implements, and the pooling built on it.

An encoder turns a padded batch of waveforms (with each clip's length in samples) into every layer's
hidden states, with each clip's number of real frames. `pooled_statistics` builds on that: each clip's
layers' mean and standard deviation over its real frames, each shaped (layers, width), computed on
batches of clips of similar length, so that no clip's result depends on what else is in its batch.
That is what `features=ssl` caches once per clip.

Weights are loaded at first use (`model`): a run whose clips are all cached never loads them.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from emotion.config import native_bf16
from emotion.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS = ("auto", "fp32", "bf16")


def length_batches(lengths: Sequence[int], padded_budget: int) -> list[list[int]]:
    """Indices grouped by similar length, each group padded to at most `padded_budget` in all (one clip at least)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batches and lengths[i] * (len(batches[-1]) + 1) <= padded_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad_batch(waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms zero-padded into one (batch, samples) tensor, with their lengths."""
    lengths = torch.tensor([len(w) for w in waves])
    return torch.nn.utils.rnn.pad_sequence(list(waves), batch_first=True), lengths


#: The file a torchaudio bundle's saved weights go to; a folder without it holds a Hugging Face model.
SAVED_CHECKPOINT = "upstream.pt"


def saved_encoder_overrides(folder: str | Path) -> dict[str, str]:
    """The `features` overrides that rebuild an encoder from the folder its `save` wrote."""
    checkpoint = Path(folder) / SAVED_CHECKPOINT
    return {"checkpoint": str(checkpoint)} if checkpoint.is_file() else {"encoder": str(folder), "checkpoint": None}


def per_clip_frames(
    waves: torch.Tensor, lengths: torch.Tensor, front_end: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`front_end` run on each clip of a padded batch alone (a group norm spanning the input would see the
    padding otherwise), its frames zero-padded into one (batch, frames, channels) tensor, with their counts."""
    frames = [front_end(wave[:n]) for wave, n in zip(waves, lengths.tolist(), strict=True)]
    counts = torch.tensor([len(f) for f in frames], device=waves.device)
    return torch.nn.utils.rnn.pad_sequence(frames, batch_first=True), counts


def resolved_precision(precision: str, device: torch.device) -> str:
    """`fp32` or `bf16`: `auto` is bf16 on a CPU with native bfloat16 (docs/performance.md measures its UAR), else
    fp32 (on a GPU too); ConfigError in one line for any other name."""
    if precision not in PRECISIONS:
        raise ConfigError(f"features.precision={precision}: choose one of {list(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cpu" and native_bf16() else "fp32"
    return precision


def frame_mask(frames: torch.Tensor, total: int) -> torch.Tensor:
    """(batch, total) booleans, True on each clip's first `frames[i]` frames."""
    return torch.arange(total, device=frames.device)[None, :] < frames[:, None]


def linear_weights_in_bf16(network: torch.nn.Module) -> torch.nn.Module:
    """A copy of `network` whose linear layers' weights are bfloat16: what autocast would cast them to, made once."""
    twin = copy.deepcopy(network)
    for module in twin.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)
    return twin


def frame_sums(layers: Sequence[torch.Tensor], frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each clip's layers summed over its real frames, and their squares: two (batch, layers, width), float64."""
    real = frame_mask(frames, layers[0].shape[1]).unsqueeze(-1)
    stacked = torch.stack([layer.double() * real for layer in layers], dim=1)  # (batch, layers, frames, width)
    return stacked.sum(dim=2).cpu(), stacked.square().sum(dim=2).cpu()


class Encoder(ABC):
    """A frozen speech encoder: its sample rate, its layers and their width, and its hidden states."""

    #: What the user named: a torchaudio bundle, a Hugging Face hub id or a folder.
    source: str
    #: The sample rate the encoder takes (Hz).
    sample_rate: int
    #: The number of hidden states `hidden_states` returns per clip.
    num_layers: int
    #: The width of each hidden state.
    width: int
    #: The longest stretch (seconds) it takes at once; longer clips are encoded in windows of this length.
    max_seconds: float | None = None
    #: `fp32`, or `bf16`: the network under bfloat16 autocast (its front end's signal processing stays fp32).
    precision: str = "fp32"

    def __init__(self) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._model: torch.nn.Module | None = None
        self._bf16: tuple[torch.nn.Module, torch.nn.Module] | None = None  # (the network, its bfloat16 twin)

    @property
    def model(self) -> torch.nn.Module:
        """The network, loaded (frozen, in eval mode, on the GPU if there is one) at its first use; with `precision`
        bf16, a copy whose linear layers hold bfloat16 weights (autocast casts frozen weights again at every call)."""
        if self._model is None:
            self._model = self.load().requires_grad_(False).eval().to(self.device)
        if self.precision != "bf16":
            return self._model
        if self._bf16 is None or self._bf16[0] is not self._model:
            self._bf16 = (self._model, linear_weights_in_bf16(self._model))
        return self._bf16[1]

    @abstractmethod
    def load(self) -> torch.nn.Module:
        """The network with its pretrained weights; ConfigError in one line if they cannot be had."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What changes the encoder's output (source, weights' fingerprint, input policy): part of the cache key."""

    @abstractmethod
    def hidden_states(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every layer's output for a padded batch (batch, samples) at `sample_rate`, and each clip's real frames.

        Returns `num_layers` tensors shaped (batch, frames, width), and the (batch,) number of frames of each clip.
        """

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write what rebuilds this encoder anywhere into the empty `folder` (`saved_encoder_overrides` reads it)."""

    def padded_cost(self, samples: int) -> int:
        """Samples a clip of `samples` costs in a padded batch (an encoder of fixed input length costs it in full)."""
        return samples

    @torch.no_grad()
    def pooled_statistics(self, waves: Sequence[torch.Tensor], batch_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each clip's layers' mean and standard deviation over its real frames: two (clips, layers, width).

        Clips longer than `max_seconds` are encoded in windows of that length, weighted by their frames.
        Batches hold clips of similar length, at most `batch_samples` of padded audio each.
        """
        pieces, owners = self._windows(waves)
        sums = torch.zeros(len(waves), self.num_layers, self.width, dtype=torch.float64)
        squares = torch.zeros_like(sums)
        counts = torch.zeros(len(waves), dtype=torch.float64)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            for batch in length_batches([self.padded_cost(len(p)) for p in pieces], batch_samples):
                padded, lengths = pad_batch([pieces[i] for i in batch])
                layers, frames = self.hidden_states(padded.to(self.device, torch.float32), lengths.to(self.device))
                summed, squared = frame_sums(layers, frames)
                for row, i in enumerate(batch):
                    sums[owners[i]] += summed[row]
                    squares[owners[i]] += squared[row]
                    counts[owners[i]] += float(frames[row])
        mean = sums / counts[:, None, None]
        variance = (squares / counts[:, None, None] - mean.square()).clamp_min(0.0)
        return mean.float(), variance.sqrt().float()

    def _windows(self, waves: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
        """The clips cut into pieces of at most `max_seconds`, and the clip each piece comes from."""
        if self.max_seconds is None:
            return list(waves), list(range(len(waves)))
        size = int(self.max_seconds * self.sample_rate)
        pieces, owners = [], []
        for index, wave in enumerate(waves):
            count = max(1, math.ceil(len(wave) / size))
            pieces += [wave[k * size : (k + 1) * size] for k in range(count)]
            owners += [index] * count
        return pieces, owners
