"""How a clip of any length becomes the fixed-size windows a model takes (`features.window`).

Two policies, chosen per run and kept in its config, so prediction and serving
apply the one the model was trained with:

- `crop` (the report's): every clip is centre-cropped or zero-padded to one
  window. Fast (features are cached once per clip), but a 9 s clip is judged
  by its middle 2 s.
- `utterance`: training draws a new random window of each clip every epoch;
  validation, test and prediction average the model's class probabilities
  over windows that cover the whole clip (every `hop` x window, the last one
  aligned to the clip's end), so every second of the clip counts.

Either policy can first trim leading and trailing silence (`trim_db`): the
clip is cut to the span between the first and the last frame whose energy is
within `trim_db` dB of its loudest frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from emotion.data.audio import fit_length
from emotion.errors import ConfigError

WindowMode = Literal["crop", "utterance"]
#: Frame length and hop (samples at 16 kHz: 64 ms and 16 ms) of the energy measure that trims silence.
TRIM_FRAME = 1024
TRIM_HOP = 256


@dataclass(frozen=True)
class Window:
    """The window policy: `mode` crop | utterance, the hop between evaluation windows, optional silence trim."""

    mode: WindowMode = "crop"
    hop: float = 0.5
    trim_db: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("crop", "utterance"):
            raise ConfigError(f"unknown features.window.mode {self.mode!r}: choose 'crop' or 'utterance'")
        if not 0 < self.hop <= 1:
            raise ConfigError(f"features.window.hop={self.hop} must be in (0, 1]: a fraction of the window")
        if self.trim_db is not None and self.trim_db <= 0:
            raise ConfigError(f"features.window.trim_db={self.trim_db} must be positive (dB below the loudest frame)")

    @property
    def whole_utterance(self) -> bool:
        return self.mode == "utterance"


def trim_silence(waveform: torch.Tensor, top_db: float) -> torch.Tensor:
    """The span of `waveform` from its first to its last frame within `top_db` dB of its loudest frame."""
    if waveform.shape[-1] < TRIM_FRAME:
        return waveform
    frames = waveform.unfold(-1, TRIM_FRAME, TRIM_HOP)
    energy_db = 10 * torch.log10(frames.square().mean(dim=-1).clamp_min(1e-12))
    loud = torch.nonzero(energy_db >= energy_db.max() - top_db).flatten()
    start = int(loud[0]) * TRIM_HOP
    end = int(loud[-1]) * TRIM_HOP + TRIM_FRAME
    return waveform[..., start:end]


def random_window(waveform: torch.Tensor, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A window of `n_samples` at a random offset (a shorter clip is zero-padded at the end)."""
    spare = waveform.shape[-1] - n_samples
    if spare <= 0:
        return fit_length(waveform, n_samples)
    start = int(torch.randint(spare + 1, (), generator=generator))
    return waveform[..., start : start + n_samples]


def covering_windows(waveform: torch.Tensor, n_samples: int, hop: float) -> torch.Tensor:
    """Windows (count, n_samples) that cover the whole clip: one every `hop` x window, the last ending at its end."""
    length = waveform.shape[-1]
    if length <= n_samples:
        return fit_length(waveform, n_samples).unsqueeze(0)
    step = max(1, round(hop * n_samples))
    count = math.ceil((length - n_samples) / step) + 1
    starts = [min(i * step, length - n_samples) for i in range(count)]
    return torch.stack([waveform[..., s : s + n_samples] for s in starts])


def stack_windows(windows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of several clips (one tensor each) in one tensor, and `segments`: each window's clip index."""
    segments = torch.cat([torch.full((len(w),), i, dtype=torch.long) for i, w in enumerate(windows)])
    return torch.cat(windows), segments


def average_over_windows(probabilities: torch.Tensor, segments: torch.Tensor, n_clips: int) -> torch.Tensor:
    """Mean of the rows of `probabilities` (windows, classes) per clip; `segments[i]` is window i's clip."""
    totals = torch.zeros(n_clips, probabilities.shape[1], dtype=probabilities.dtype, device=probabilities.device)
    totals.index_add_(0, segments, probabilities)
    counts = torch.bincount(segments, minlength=n_clips).clamp_min(1).to(probabilities.dtype)
    return totals / counts.unsqueeze(1)
